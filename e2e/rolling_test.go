package e2e

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/meshop/meshop/e2e/system"
)

// TestRollingRestart (issue 12): product and payment run two instances
// each; while a client buys without pause and without retrying, every
// instance in turn is stopped gracefully (withdrawn from the mesh,
// drained, deregistered) and started again. Every checkout is 201
// CONFIRMED: a deploy loses no request and answers no checkout_pending.
func TestRollingRestart(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: one instance per service; rolling restarts run proxyless")
		}
	})
	for _, svc := range []string{"product", "payment"} {
		if _, err := sys.StartReplica(ctx, svc, 2, nil); err != nil {
			t.Fatal(err)
		}
	}
	// One product with stock for any number of checkouts, so only the
	// restarts can fail one.
	bearer := customer(t, sys, "rolling@example.com")
	if err := sys.GrantAdmin(ctx, "rolling@example.com"); err != nil {
		t.Fatal(err)
	}
	login := call[map[string]any](t, "POST", sys.Instance("auth").URL()+"/auth/login", nil,
		`{"email":"rolling@example.com","password":"correct horse battery"}`, http.StatusOK)
	bearer = "Bearer " + login["access_token"].(string)
	product := call[map[string]any](t, "POST", sys.Instance("product").URL()+"/products", map[string]string{"Authorization": bearer},
		`{"name":"Rolling Beans","description":"for the rolling restart","price_cents":500,"currency":"USD","stock":1000000}`, http.StatusCreated)
	body := fmt.Sprintf(`{"items":[{"product_id":%q,"quantity":1}],"payment":{"card_token":"tok_visa"}}`, product["id"])

	var (
		mu       sync.Mutex
		answered int
		failures []string
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return answered
	}
	done := make(chan struct{})
	var buyers sync.WaitGroup
	for c := range 2 {
		buyers.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-done:
					return
				default:
				}
				key := fmt.Sprintf("rolling-%d-%d", c, n)
				code, o := postCheckout(sys.Instance("order").URL(), bearer, key, body)
				mu.Lock()
				answered++
				if code != http.StatusCreated || o["status"] != "CONFIRMED" {
					failures = append(failures, fmt.Sprintf("%s: %d %v", key, code, o))
				}
				mu.Unlock()
			}
		})
	}
	stopBuyers := sync.OnceFunc(func() {
		close(done)
		buyers.Wait()
	})
	defer stopBuyers()
	// Some checkouts go through before, between and after the restarts.
	waitFor := func(more int) {
		target := count() + more
		eventually(t, 30*time.Second, func() (bool, string) {
			return count() >= target, fmt.Sprintf("%d checkouts answered, want %d", count(), target)
		})
	}
	waitFor(10)
	for _, svc := range []string{"product", "payment"} {
		for _, id := range []string{system.PrimaryID(svc), system.PrimaryID(svc) + "-2"} {
			if err := sys.StopInstance(id); err != nil {
				t.Fatal(err)
			}
			waitFor(5) // the other instance serves alone meanwhile
			if _, err := sys.StartInstance(ctx, svc, id, sys.Binary(svc), nil); err != nil {
				t.Fatal(err)
			}
			waitFor(5)
		}
	}
	stopBuyers()
	t.Logf("%d checkouts across four restarts, %d failed", answered, len(failures))
	for _, f := range failures {
		t.Error(f)
	}
}
