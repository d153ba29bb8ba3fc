// Command user runs the user service. Settings: see kit/app.Settings. It
// verifies bearer tokens against the auth service's JWKS (upstream "auth").
package main

import (
	"context"
	"fmt"
	"os"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/user"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "user:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	a, err := app.New(ctx, app.Spec{Name: "user", Upstreams: []string{"auth"}, PublicPrefixes: []string{"/users"}})
	if err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, user.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()

	authConn, err := a.Mesh.Conn("auth")
	if err != nil {
		return err
	}
	verifier := auth.NewVerifier(authclient.New(authConn), auth.VerifierConfig{Logger: a.Logger})
	svc := user.New(user.NewStore(db))
	endpoints := user.NewEndpoints(svc, a.Logger, a.Requests)
	userv1.RegisterUsersServer(a.GRPC, user.NewGRPCServer(endpoints))
	return a.Run(ctx, user.NewHTTPHandler(endpoints, verifier.Middleware))
}
