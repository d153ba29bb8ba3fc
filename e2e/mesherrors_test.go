package e2e

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/e2e/system"
)

// TestMeshErrorsDuringRecovery (issue 12): an order whose charge
// succeeded but whose answer order never recorded (order crashed right
// after it) is recovered while the mesh, not payment, answers: first no
// payment endpoint at all (grpc-go's xDS client: UNAVAILABLE), then
// payment back but the order → payment intention removed (payment's RBAC:
// PERMISSION_DENIED). The recoverer retries again and again, with the
// age-based cancel due at once (CHECKOUT_MAX_AGE=1s), and never cancels the
// charged order; once the intention is back the order is CONFIRMED with
// its one charge and no refund.
func TestMeshErrorsDuringRecovery(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: Envoy's own replies are fed to the client in services/order TestSidecarRepliesAreNeverRefusals")
		}
	})
	orderEnv := []string{"RECOVER_INTERVAL=200ms", "RECOVER_GRACE=1ms", "CHECKOUT_LEASE=2s", "CHECKOUT_MAX_AGE=1s",
		"RECOVER_BACKOFF=100ms", "RECOVER_BACKOFF_MAX=300ms", "RECOVER_BUDGET=1000"}
	consul, err := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr(), Token: sys.Consul.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	orders := openDB(t, "sqlite:"+filepath.Join(sys.Dir, "data", "order.db"))
	payments := openDB(t, "sqlite:"+filepath.Join(sys.Dir, "data", "payment.db"))
	bearer := customer(t, sys, "mesh-errors@example.com")

	// The charge goes through; order dies before recording its answer.
	if err := sys.StopService("order"); err != nil {
		t.Fatal(err)
	}
	crash, err := sys.StartServiceBinary(ctx, "order", failpointBuild(t, sys, "order"), append([]string{"ORDER_CRASH_AT=charged"}, orderEnv...))
	if err != nil {
		t.Fatal(err)
	}
	checkout(sys, bearer, "mesh-errors")
	select {
	case <-crash.Done():
	case <-time.After(20 * time.Second):
		t.Fatal("order did not crash after the charge")
	}
	var id string
	if err := orders.Get(&id, `SELECT id FROM orders WHERE idempotency_key = 'mesh-errors'`); err != nil {
		t.Fatal(err)
	}
	var charged int
	if err := payments.Get(&charged, `SELECT COUNT(*) FROM payments WHERE order_id = ? AND status = 'SUCCEEDED'`, id); err != nil || charged != 1 {
		t.Fatalf("order %s: %d successful payments (%v), want the charge to have gone through", id, charged, err)
	}

	// state returns the order's status, step and recovery attempts.
	state := func(t *testing.T) (status, step string, attempts int) {
		var row struct {
			Status   string `db:"status"`
			Step     string `db:"step"`
			Attempts int    `db:"attempts"`
		}
		if err := orders.Get(&row, `SELECT status, step, attempts FROM orders WHERE id = ?`, id); err != nil {
			t.Fatal(err)
		}
		return row.Status, row.Step, row.Attempts
	}
	// blockedBy waits until the recoverer has tried n more times and its
	// last word names code, the order still PENDING at the charge.
	blockedBy := func(t *testing.T, code string, n int) {
		t.Helper()
		_, _, from := state(t)
		eventually(t, 60*time.Second, func() (bool, string) {
			status, step, attempts := state(t)
			if status != "PENDING" || step != "charging" {
				t.Fatalf("order %s is %s/%s while payment was unreachable through the mesh (%s); want PENDING/charging", id, status, step, code)
			}
			log := sys.Instance("order").Tail(3000)
			return attempts >= from+n && strings.Contains(log, "code = "+code),
				fmt.Sprintf("%d attempts since %d; order's log:\n%s", attempts, from, log)
		})
	}

	t.Run("no payment endpoint", func(t *testing.T) {
		if err := sys.StopService("payment"); err != nil {
			t.Fatal(err)
		}
		if _, err := sys.StartService(ctx, "order", orderEnv); err != nil {
			t.Fatal(err)
		}
		blockedBy(t, "Unavailable", 5)
	})

	entry, _, err := consul.ConfigEntries().Get(api.ServiceIntentions, "payment", nil)
	if err != nil {
		t.Fatal(err)
	}
	kept := *entry.(*api.ServiceIntentionsConfigEntry)
	t.Run("order denied by payment's RBAC", func(t *testing.T) {
		without := kept
		without.Sources = slices.DeleteFunc(slices.Clone(kept.Sources), func(s *api.SourceIntention) bool { return s.Name == "order" })
		if _, _, err := consul.ConfigEntries().Set(&without, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := sys.StartService(ctx, "payment", nil); err != nil {
			t.Fatal(err)
		}
		blockedBy(t, "PermissionDenied", 5)
	})

	restored := kept
	restored.ModifyIndex = 0
	if _, _, err := consul.ConfigEntries().Set(&restored, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		status, step, attempts := state(t)
		return status == "CONFIRMED", fmt.Sprintf("order %s/%s after %d attempts", status, step, attempts)
	})
	o := call[map[string]any](t, "GET", sys.Instance("order").URL()+"/orders/"+id, map[string]string{"Authorization": bearer}, "", http.StatusOK)
	var refunds int
	if err := payments.Get(&charged, `SELECT COUNT(*) FROM payments WHERE order_id = ? AND status = 'SUCCEEDED'`, id); err != nil {
		t.Fatal(err)
	}
	if err := payments.Get(&refunds, `SELECT COUNT(*) FROM refunds WHERE order_id = ?`, id); err != nil {
		t.Fatal(err)
	}
	if o["status"] != "CONFIRMED" || charged != 1 || refunds != 0 {
		t.Errorf("order %v with %d charges and %d refunds; want CONFIRMED, one charge, no refund", o["status"], charged, refunds)
	}
}
