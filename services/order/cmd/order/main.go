// Command order runs the order service. Settings: see kit/app.Settings, and
//
//	RECOVER_INTERVAL [5s]  how often stalled checkouts are resumed
//	RECOVER_GRACE    [10s] how long a PENDING order is left alone first
//	CHECKOUT_MAX_AGE [10m] after which a checkout that never charged is cancelled
//	CHECKOUT_LEASE   [30s] how long a checkout run's claim on an order lasts (longer than any run)
//	IDEMPOTENCY_TTL  [24h] how long an Idempotency-Key replays its order; after it, the key is a new request
//	RECOVER_BUDGET   [50]  attempts after which a checkout that cannot finish is parked for an operator
//	RECOVER_BACKOFF  [5s]  the first wait between attempts, doubled each time up to RECOVER_BACKOFF_MAX [5m]
//	RECONCILE_INTERVAL [1m], RECONCILE_WINDOW [24h]: how often finished orders are compared with their
//	                 payments, and how far back a start begins
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"

	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/order"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	productclient "github.com/meshop/meshop/services/product/client"
	userclient "github.com/meshop/meshop/services/user/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "order:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx := context.Background()
	a, err := app.New(ctx, app.Spec{Name: "order", Upstreams: []string{"auth", "user", "product", "payment"}, PublicPrefixes: []string{"/orders"}})
	if err != nil {
		return err
	}
	env := config.FromEnv()
	recoverer := order.Recoverer{
		Interval:   env.Duration("RECOVER_INTERVAL", 5*time.Second),
		Grace:      env.Duration("RECOVER_GRACE", 10*time.Second),
		MaxAge:     env.Duration("CHECKOUT_MAX_AGE", 10*time.Minute),
		Budget:     env.Int("RECOVER_BUDGET", 50, 1, 1_000_000),
		Backoff:    env.Duration("RECOVER_BACKOFF", 5*time.Second),
		BackoffMax: env.Duration("RECOVER_BACKOFF_MAX", 5*time.Minute),
		Parked: promauto.With(a.Metrics).NewCounter(prometheus.CounterOpts{
			Name: "meshop_order_checkouts_parked_total",
			Help: "Checkouts parked for an operator after their recovery attempt budget was spent.",
		}),
	}
	keyTTL := env.Duration("IDEMPOTENCY_TTL", order.DefaultKeyTTL)
	lease := env.Duration("CHECKOUT_LEASE", 30*time.Second)
	reconciler := order.Reconciler{
		Interval: env.Duration("RECONCILE_INTERVAL", time.Minute),
		Window:   env.Duration("RECONCILE_WINDOW", 24*time.Hour),
		Found: promauto.With(a.Metrics).NewCounterVec(prometheus.CounterOpts{
			Name: "meshop_order_reconcile_found_total",
			Help: "Finished orders that disagreed with their payment, by kind (charged_not_confirmed: refunded; confirmed_not_charged: reported).",
		}, []string{"kind"}),
	}
	if err := env.Err(); err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, order.Migrations(), events.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	a.Metrics.MustRegister(order.NewMetrics(db))
	bus, relay, err := a.Events(ctx, db)
	if err != nil {
		return err
	}
	defer bus.Close()

	userConn, err := a.Mesh.Conn("user")
	if err != nil {
		return err
	}
	productConn, err := a.Mesh.Conn("product")
	if err != nil {
		return err
	}
	paymentConn, err := a.Mesh.Conn("payment")
	if err != nil {
		return err
	}
	store := order.NewStore(db, events.NewOutbox(a.Telemetry.Propagator, relay.Notify))
	recoverer.Deps = order.Deps{
		Store:     store,
		Users:     order.NewUsers(userclient.New(userConn)),
		Inventory: order.NewInventory(productclient.New(productConn)),
		Payments:  order.NewPayments(paymentclient.New(paymentConn)),
		Logger:    a.Logger,
		KeyTTL:    keyTTL,
		Lease:     lease,
	}
	reconciler.Deps = recoverer.Deps
	svc := order.New(recoverer.Deps)
	endpoints := order.NewEndpoints(svc, a.Logger, a.Requests)
	authConn, err := a.Mesh.Conn("auth")
	if err != nil {
		return err
	}
	verifier := auth.NewVerifier(authclient.New(authConn), auth.VerifierConfig{Logger: a.Logger})
	return a.Run(ctx, order.NewHTTPHandler(endpoints, verifier.Middleware), relay.Run, recoverer.Run, reconciler.Run)
}
