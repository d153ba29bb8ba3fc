package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/services/kit/sqldb"
)

// TestAmbiguousCharge (issue 12): payment charges the card and then its
// answer is lost, through a failpoint build of payment (-tags failpoints,
// PAYMENT_FAIL_AT) placed right after the provider charged and before
// payment records the outcome:
//
//   - charged-crash: payment dies there;
//   - charged-stall: payment hangs there past order's deadline (the answer
//     is lost by timeout), and is then killed.
//
// Either way the checkout must not succeed yet and the order stay PENDING,
// payment's row PENDING or UNKNOWN while the provider (the simulator,
// which keeps its records in payment's database) holds the charge. Payment
// is restarted in that state, and the checkout retried with the same key
// ends CONFIRMED: exactly one successful payment and one provider charge
// per order (the same charge), the stock taken once, one confirmation
// email.
func TestAmbiguousCharge(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: the ambiguous charge runs proxyless")
		}
		// Order retries at once; a run's claim expires after
		// CHECKOUT_LEASE. Order's charge call is bounded by
		// MESH_CALL_TIMEOUT (2s by default), which is what the stall
		// outlasts.
		plan.Env = []string{"RECOVER_INTERVAL=200ms", "RECOVER_GRACE=1ms", "CHECKOUT_LEASE=2s"}
	})
	failing := failpointBuild(t, sys, "payment")
	payments, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(sys.Dir, "data", "payment.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer payments.Close()
	orderDB, err := sqldb.Open(ctx, "sqlite:"+filepath.Join(sys.Dir, "data", "order.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer orderDB.Close()

	bearer := customer(t, sys, "ambiguous@example.com")
	stock := func() int64 {
		p := call[map[string]any](t, "GET", sys.Instance("product").URL()+"/products/p-filters", nil, "", http.StatusOK)
		return int64(p["stock"].(float64))
	}
	before := stock()
	points := []string{"charged-crash", "charged-stall"}
	orders := map[string]string{} // failpoint → order id
	for _, point := range points {
		t.Run(point, func(t *testing.T) {
			if err := sys.StopService("payment"); err != nil {
				t.Fatal(err)
			}
			inst, err := sys.StartServiceBinary(ctx, "payment", failing, []string{"PAYMENT_FAIL_AT=" + point})
			if err != nil {
				t.Fatal(err)
			}
			key := "ambiguous-" + point
			started := time.Now()
			code, body := checkout(sys, bearer, key)
			t.Logf("checkout with payment at %s: %d %v after %s", point, code, body, time.Since(started).Round(time.Millisecond))
			// No success: payment's answer never came. Order answers
			// checkout_pending (or, at worst, no answer at all).
			if code != 0 && (code != http.StatusServiceUnavailable || errorCode(body) != "checkout_pending") {
				t.Fatalf("checkout while payment's answer is lost = %d %v, want 503 checkout_pending", code, body)
			}

			switch point {
			case "charged-crash":
				select {
				case <-inst.Done():
				case <-time.After(20 * time.Second):
					t.Fatal("payment did not crash after charging")
				}
				if !strings.Contains(inst.Tail(4000), "failpoint: crashing right after charged") {
					t.Fatalf("payment ended, but not at the failpoint:\n%s", inst.Tail(2000))
				}
			case "charged-stall":
				// Payment's handler saw its caller's deadline pass: the answer
				// was lost by timeout, not by a crash.
				eventually(t, 20*time.Second, func() (bool, string) {
					return strings.Contains(inst.Tail(4000), "failpoint: the caller gave up after charged"), inst.Tail(2000)
				})
				if inst.Exited() {
					t.Fatalf("the stalling payment ended by itself:\n%s", inst.Tail(2000))
				}
			}

			var o struct{ ID, Status string }
			if err := orderDB.Get(&o, `SELECT id, status FROM orders WHERE idempotency_key = ?`, key); err != nil {
				t.Fatalf("order of key %s: %v", key, err)
			}
			if o.Status != "PENDING" {
				t.Fatalf("order %s is %s while its payment's outcome is unknown, want PENDING", o.ID, o.Status)
			}
			orders[point] = o.ID

			// Kill payment (the stalled one never records; a graceful stop
			// would wait for its handler) and look at the state it left.
			if err := inst.Signal(syscall.SIGKILL); err != nil && !inst.Exited() {
				t.Fatal(err)
			}
			<-inst.Done()
			var status string
			if err := payments.Get(&status, `SELECT status FROM payments WHERE order_id = ?`, o.ID); err != nil {
				t.Fatalf("payment of order %s: %v", o.ID, err)
			}
			if status != "PENDING" && status != "UNKNOWN" {
				t.Fatalf("payment of order %s is %s before the restart, want PENDING or UNKNOWN (the failpoint records nothing)", o.ID, status)
			}
			var outcome string
			if err := payments.Get(&outcome, `SELECT outcome FROM simulator_charges WHERE order_id = ?`, o.ID); err != nil || outcome != "approved" {
				t.Fatalf("provider's charge of order %s: %q (%v), want approved before the restart", o.ID, outcome, err)
			}
			t.Logf("payment restarts with order %s's payment %s and the provider's charge approved", o.ID, status)

			if _, err := sys.StartService(ctx, "payment", nil); err != nil {
				t.Fatal(err)
			}
			// The restarted payment (a retry's replay, or its resolver)
			// learns the outcome from the provider; order's recoverer or this
			// retry of the key finishes the checkout.
			var final map[string]any
			eventually(t, 60*time.Second, func() (bool, string) {
				code, body := checkout(sys, bearer, key)
				final = body
				return code == http.StatusCreated && body["status"] == "CONFIRMED", fmt.Sprintf("%d %v", code, body)
			})
			if final["id"] != o.ID {
				t.Fatalf("retry of key %s answered order %v, want %s", key, final["id"], o.ID)
			}
			t.Logf("order %s CONFIRMED %s after the first checkout", o.ID, time.Since(started).Round(time.Millisecond))
		})
	}
	if t.Failed() {
		return
	}
	for point, id := range orders {
		var ps []struct {
			ID       string `db:"id"`
			Status   string `db:"status"`
			ChargeID string `db:"charge_id"`
		}
		if err := payments.Select(&ps, `SELECT id, status, charge_id FROM payments WHERE order_id = ?`, id); err != nil {
			t.Fatal(err)
		}
		if len(ps) != 1 || ps[0].Status != "SUCCEEDED" {
			t.Errorf("%s: payments of order %s %+v, want one SUCCEEDED", point, id, ps)
			continue
		}
		var charges []struct {
			ChargeID string `db:"charge_id"`
			Outcome  string `db:"outcome"`
		}
		if err := payments.Select(&charges, `SELECT charge_id, outcome FROM simulator_charges WHERE order_id = ?`, id); err != nil {
			t.Fatal(err)
		}
		if len(charges) != 1 || charges[0].Outcome != "approved" || charges[0].ChargeID != ps[0].ChargeID {
			t.Errorf("%s: provider charges of order %s %+v, want one approved, %s (the payment's)", point, id, charges, ps[0].ChargeID)
		}
		var o struct {
			Status    string  `db:"status"`
			PaymentID *string `db:"payment_id"`
		}
		if err := orderDB.Get(&o, `SELECT status, payment_id FROM orders WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		if o.Status != "CONFIRMED" || o.PaymentID == nil || *o.PaymentID != ps[0].ID {
			t.Errorf("%s: order %s is %s with payment %v, want CONFIRMED with %s", point, id, o.Status, o.PaymentID, ps[0].ID)
		}
	}
	if got := stock(); got != before-int64(len(points)) {
		t.Errorf("stock of p-filters %d, want %d (one per checkout)", got, before-int64(len(points)))
	}
	oneConfirmationEach(t, sys, bearer, orders)
}

// errorCode is the code of an error body {"error":{"code":...}}.
func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}
