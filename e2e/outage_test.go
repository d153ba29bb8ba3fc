package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestNATSOutage stops NATS for 60 s while customers check out: checkouts
// keep succeeding (their events wait in the outbox), and once NATS is
// back every event is published: one confirmation email per order, none
// lost, none twice, and the outboxes empty (issue 12).
func TestNATSOutage(t *testing.T) {
	sys := startSystem(t, nil)
	bearer := customer(t, sys, "outage@example.com")
	var orders []string
	buy := func(key string) {
		t.Helper()
		code, o := checkout(sys, bearer, key)
		if code != http.StatusCreated || o["status"] != "CONFIRMED" {
			t.Fatalf("checkout %s: %d %v", key, code, o)
		}
		orders = append(orders, o["id"].(string))
	}
	buy("before-outage")

	sys.NATS.Shutdown()
	outage := time.Now()
	arrivals := time.NewTicker(2 * time.Second) // customers arriving during the outage
	defer arrivals.Stop()
	for i := 0; time.Since(outage) < 60*time.Second; i++ {
		buy(fmt.Sprint("during-outage-", i))
		<-arrivals.C
	}
	if err := sys.NATS.Restart(); err != nil {
		t.Fatal(err)
	}
	buy("after-outage")

	eventually(t, 90*time.Second, func() (bool, string) {
		page := call[map[string]any](t, "GET", sys.Instance("notification").URL()+"/notifications?limit=100",
			map[string]string{"Authorization": bearer}, "", http.StatusOK)
		confirmations := map[string]int{}
		for _, it := range page["items"].([]any) {
			n := it.(map[string]any)
			for _, id := range orders {
				if n["event_type"] == "order.confirmed" && strings.Contains(n["body"].(string), id) {
					confirmations[id]++
				}
			}
		}
		for _, id := range orders {
			if confirmations[id] != 1 {
				return false, fmt.Sprintf("%d orders, confirmation emails: %v", len(orders), confirmations)
			}
		}
		return true, ""
	})
	for _, svc := range []string{"order", "payment", "product"} {
		eventually(t, 30*time.Second, func() (bool, string) {
			m := text(t, sys.Instance(svc).URL()+"/metrics")
			return strings.Contains(m, `meshop_outbox_unsent{service="`+svc+`"} 0`), svc + "'s outbox still holds events"
		})
	}
}
