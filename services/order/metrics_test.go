package order

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetricsReportTheOrdersTable(t *testing.T) {
	h := withAda(t)
	h.payments.setDown(true)
	h.svc.Create(as("u1"), "pending", request("tok_visa"))
	h.payments.setDown(false)
	h.svc.Create(as("u1"), "confirmed", request("tok_visa"))
	want := `
# HELP meshop_orders Orders by status and checkout step.
# TYPE meshop_orders gauge
meshop_orders{status="CONFIRMED",step="done"} 1
meshop_orders{status="PENDING",step="charging"} 1
# HELP meshop_orders_parked PENDING orders parked for an operator after their recovery attempt budget.
# TYPE meshop_orders_parked gauge
meshop_orders_parked 0
`
	if err := testutil.CollectAndCompare(NewMetrics(h.store.db), strings.NewReader(want), "meshop_orders", "meshop_orders_parked"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(NewMetrics(h.store.db), "meshop_orders_oldest_pending_age_seconds"); n != 1 {
		t.Errorf("oldest pending age: %d series", n)
	}
}
