module github.com/meshop/meshop/services/order

go 1.26
