package payment

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestResolverSettlesUnknown: nobody retries; the Resolver actor finds the
// outcome in the background.
func TestResolverSettlesUnknown(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		f := newFixture(t, databaseURL, Config{ProviderTimeout: 50 * time.Millisecond})
		ctx, cancel := context.WithCancel(context.Background())
		_, _, err := f.svc.Charge(ctx, chargeReq("o1", CardTimeout))
		if errs.As(err).Code != "payment_pending" {
			t.Fatalf("Charge = %v", err)
		}
		done := make(chan error, 1)
		r := Resolver{Service: f.svc, Interval: 10 * time.Millisecond, Logger: discardLogger()}
		go func() { done <- r.Run(ctx) }()

		deadline := time.After(10 * time.Second)
		for {
			p, err := f.store.GetByOrder(context.Background(), "o1")
			if err != nil {
				t.Fatal(err)
			}
			if p.Status == StatusSucceeded {
				break
			}
			select {
			case <-deadline:
				t.Fatalf("resolver did not settle the payment: %+v", p)
			case <-time.After(10 * time.Millisecond):
			}
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v", err)
		}
		if ev := outboxEvents(t, f.db); len(ev) != 1 || ev[0].Type != events.PaymentSucceeded {
			t.Errorf("events = %+v", ev)
		}
	})
}
