// Command payment runs the payment service. Settings: kit/app.Settings,
// plus the ones of Settings below (see the service's README).
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	authclient "github.com/meshop/meshop/services/auth/client"
	"github.com/meshop/meshop/services/kit/app"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/payment"
	paymentv1 "github.com/meshop/meshop/services/payment/proto/meshop/payment/v1"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "payment:", err)
		os.Exit(1)
	}
}

// Settings are payment's own environment variables (defaults in brackets).
type Settings struct {
	ProviderTimeout time.Duration // PROVIDER_TIMEOUT [1s]: bound of each card provider call
	ProviderLatency time.Duration // PROVIDER_LATENCY [0s]: the simulated provider's answer delay
	ResolveInterval time.Duration // RESOLVE_INTERVAL [5s]: how often payments of unknown outcome are settled
}

func loadSettings(r *config.Reader) (Settings, error) {
	s := Settings{
		ProviderTimeout: r.Duration("PROVIDER_TIMEOUT", time.Second),
		ResolveInterval: r.Duration("RESOLVE_INTERVAL", 5*time.Second),
	}
	// Zero is a valid latency, which Reader.Duration refuses.
	latency, err := time.ParseDuration(r.String("PROVIDER_LATENCY", "0s"))
	if err != nil || latency < 0 {
		r.Fail("PROVIDER_LATENCY", "must be a duration like 0s or 200ms")
	}
	s.ProviderLatency = latency
	return s, r.Err()
}

func run() error {
	ctx := context.Background()
	settings, err := loadSettings(config.FromEnv())
	if err != nil {
		return err
	}
	a, err := app.New(ctx, app.Spec{Name: payment.Name, Upstreams: []string{"auth"}, PublicPrefixes: []string{"/payments"}})
	if err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, payment.Migrations(), events.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	a.Metrics.MustRegister(payment.NewMetrics(db))
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
	provider := payment.NewSimulator(db, settings.ProviderLatency)
	svc := payment.New(payment.NewStore(db, events.NewOutbox(a.Telemetry.Propagator, relay.Notify)), provider, payment.Config{ProviderTimeout: settings.ProviderTimeout})
	resolver := payment.Resolver{Service: svc, Interval: settings.ResolveInterval, Logger: a.Logger}
	endpoints := payment.NewEndpoints(svc, a.Logger, a.Requests)
	paymentv1.RegisterPaymentsServer(a.GRPC, payment.NewGRPCServer(endpoints))
	return a.Run(ctx, payment.NewHTTPHandler(endpoints, verifier.Middleware), relay.Run, resolver.Run)
}
