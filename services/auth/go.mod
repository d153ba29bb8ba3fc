module github.com/meshop/meshop/services/auth

go 1.26

require (
	github.com/meshop/meshop/localenv v0.0.0
	github.com/meshop/meshop/services/kit v0.0.0
)

replace (
	github.com/meshop/meshop/localenv => ../../localenv
	github.com/meshop/meshop/services/kit => ../kit
)
