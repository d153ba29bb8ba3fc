// Command product runs the product service. Settings: see kit/app.Settings.
package main

import (
	"context"
	"fmt"
	"os"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/product"
	productv1 "github.com/meshop/meshop/services/product/proto/meshop/product/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "product:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	a, err := app.New(ctx, app.Spec{Name: product.Name, Upstreams: []string{"auth"}, PublicPrefixes: []string{"/products"}})
	if err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, product.Migrations(), events.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	bus, relay, err := a.Events(ctx, db)
	if err != nil {
		return err
	}
	defer bus.Close()

	authConn, err := a.Mesh.Conn("auth")
	if err != nil {
		return err
	}
	verifier := auth.NewVerifier(authclient.New(authConn), auth.VerifierConfig{Logger: a.Logger})
	svc := product.New(product.NewStore(db, events.NewOutbox(a.Telemetry.Propagator, relay.Notify)))
	endpoints := product.NewEndpoints(svc, a.Logger, a.Requests)
	productv1.RegisterReservationsServer(a.GRPC, product.NewGRPCServer(endpoints))
	return a.Run(ctx, product.NewHTTPHandler(endpoints, verifier.Middleware), relay.Run)
}
