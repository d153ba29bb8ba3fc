// Command user runs the user service. Settings: see kit/app.Settings. It
// verifies bearer tokens against the auth service's JWKS (upstream "auth").
//
// `user grant-admin <email>` is the operator's way to make a user an
// admin (no API grants the role): it sets the role in the database at
// DATABASE_URL and exits; the user's next login carries it.
package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/user"
	userv1 "github.com/meshop/meshop/services/user/proto/meshop/user/v1"
)

func main() {
	do := run
	if len(os.Args) > 1 {
		do = command
	}
	if err := do(); err != nil {
		fmt.Fprintln(os.Stderr, "user:", err)
		os.Exit(1)
	}
}

// command runs the operator command named by the arguments.
func command() error {
	if len(os.Args) != 3 || os.Args[1] != "grant-admin" {
		return errors.New("usage: user grant-admin <email> (DATABASE_URL names the database); without arguments, user runs the service")
	}
	ctx := context.Background()
	db, err := sqldb.OpenMigrated(ctx, cmp.Or(os.Getenv("DATABASE_URL"), "sqlite:user.db"), user.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	if err := user.NewStore(db).SetRole(ctx, os.Args[2], user.RoleAdmin); err != nil {
		return err
	}
	fmt.Printf("user: %s is an admin from their next login\n", os.Args[2])
	return nil
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
