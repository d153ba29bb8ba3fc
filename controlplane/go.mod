module github.com/meshop/meshop/controlplane

go 1.26
