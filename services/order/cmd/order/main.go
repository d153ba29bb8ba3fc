// Command order runs the order service. Settings: see kit/app.Settings.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/order"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	a, err := app.New(ctx, app.Spec{Name: "order", Upstreams: []string{"user"}, PublicPrefixes: []string{"/orders"}})
	if err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, order.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()

	svc := order.New(order.NewStore(db), order.MeshUsers{Mesh: a.Mesh})
	endpoints := order.NewEndpoints(svc, a.Logger, a.Requests)
	return a.Run(ctx, order.NewHTTPHandler(endpoints))
}
