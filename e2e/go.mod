module github.com/meshop/meshop/e2e

go 1.26
