module github.com/meshop/meshop/services/user

go 1.26
