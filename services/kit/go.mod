module github.com/meshop/meshop/services/kit

go 1.26
