// Command product runs the product service. Settings: see kit/app.Settings.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/product"
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

	verifier := auth.NewVerifier(auth.MeshKeys(a.Mesh), auth.VerifierConfig{Logger: a.Logger})
	svc := product.New(product.NewStore(db, events.NewOutbox(a.Telemetry.Propagator, relay.Notify)))
	endpoints := product.NewEndpoints(svc, a.Logger, a.Requests)
	return a.Run(ctx, product.NewHTTPHandler(endpoints, verifier.Middleware), relay.Run)
}
