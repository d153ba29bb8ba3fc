package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/services/kit/sqldb"
)

// TestCrashPoints kills the order process right after each step of the
// checkout saga (a failpoint build of order: -tags failpoints,
// ORDER_CRASH_AT), restarts it, and checks each checkout ends as if
// nothing happened: the order CONFIRMED, exactly one successful charge,
// the stock taken once, and one confirmation email (issue 12).
func TestCrashPoints(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: crash points run proxyless")
		}
		// Recovery without delay, so a restarted order finishes at once.
		// A crashed run's claim expires after CHECKOUT_LEASE.
		plan.Env = []string{"RECOVER_INTERVAL=200ms", "RECOVER_GRACE=1ms", "CHECKOUT_LEASE=2s"}
	})
	crashing := failpointBuild(t, sys, "order")
	bearer := customer(t, sys, "crash@example.com")
	stock := func() int64 {
		p := call[map[string]any](t, "GET", sys.Instance("product").URL()+"/products/p-filters", nil, "", http.StatusOK)
		return int64(p["stock"].(float64))
	}
	before := stock()
	steps := []string{"created", "reserved", "charging", "charged", "committed", "finished"}
	orders := map[string]string{} // step → order id
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			if err := sys.StopService("order"); err != nil {
				t.Fatal(err)
			}
			crash, err := sys.StartServiceBinary(ctx, "order", crashing, []string{"ORDER_CRASH_AT=" + step})
			if err != nil {
				t.Fatal(err)
			}
			key := "crash-" + step
			checkout(sys, bearer, key) // the process dies under it
			select {
			case <-crash.Done():
			case <-time.After(20 * time.Second):
				t.Fatalf("order did not crash after %s", step)
			}
			if !strings.Contains(crash.Tail(4000), "failpoint: crashing right after "+step) {
				t.Fatalf("order ended, but not at the failpoint:\n%s", crash.Tail(2000))
			}
			if _, err := sys.StartService(ctx, "order", nil); err != nil {
				t.Fatal(err)
			}
			// The restarted instance (its recoverer, or this retry of the
			// key) finishes the checkout.
			var o map[string]any
			eventually(t, 30*time.Second, func() (bool, string) {
				code, body := checkout(sys, bearer, key)
				o = body
				return code == http.StatusCreated && o["status"] == "CONFIRMED", fmt.Sprintf("%d %v", code, body)
			})
			orders[step] = o["id"].(string)
		})
	}
	if t.Failed() {
		return
	}
	payments, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(sys.Dir, "data", "payment.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer payments.Close()
	for step, id := range orders {
		var charges int
		if err := payments.Get(&charges, `SELECT COUNT(*) FROM payments WHERE order_id = ? AND status = 'SUCCEEDED'`, id); err != nil || charges != 1 {
			t.Errorf("%s: %d successful payments for order %s (%v), want 1", step, charges, id, err)
		}
	}
	if got := stock(); got != before-int64(len(steps)) {
		t.Errorf("stock of p-filters %d, want %d (one per checkout)", got, before-int64(len(steps)))
	}
	// One confirmation email per order: every event published at least
	// once, its effect applied once.
	oneConfirmationEach(t, sys, bearer, orders)
}

// checkout posts one checkout of p-filters with key to order's primary
// instance; a dead order gives status 0.
func checkout(sys *system.System, bearer, key string) (int, map[string]any) {
	body := `{"items":[{"product_id":"p-filters","quantity":1}],"payment":{"card_token":"tok_visa"}}`
	return postCheckout(sys.Instance("order").URL(), bearer, key, body)
}
