package order

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshop/meshop/services/kit/errs"
	paymentclient "github.com/meshop/meshop/services/payment/client"
)

// TestReconcilerRepairsOrReportsWhatDisagrees: a cancelled order whose
// payment succeeded is refunded; a confirmed one without a successful
// payment is reported; agreeing pairs are left alone; a payment that
// cannot answer stops the pass there, to be asked again.
func TestReconcilerRepairsOrReportsWhatDisagrees(t *testing.T) {
	h := withAda(t)
	ok, _, _ := h.svc.Create(as("u1"), "ok", request("tok_visa"))
	unpaid, _, _ := h.svc.Create(as("u1"), "unpaid", request("tok_visa"))
	_, _, err := h.svc.Create(as("u1"), "charged", request("tok_declined"))
	charged := errs.As(err).Details["order_id"].(string)
	h.payments.mu.Lock()
	delete(h.payments.payments, unpaid.ID) // payment lost its record
	p := h.payments.payments[charged]
	p.Status = paymentclient.StatusSucceeded // the decline was not the last word
	h.payments.payments[charged] = p
	h.payments.down = true
	h.payments.mu.Unlock()

	found := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "found"}, []string{"kind"})
	r := Reconciler{Deps: h.deps, Interval: time.Hour, Window: time.Hour, Found: found}
	s := New(h.deps).(*service)
	since := s.now().Add(-time.Hour)
	if next := r.pass(context.Background(), s, since); !next.Equal(since) {
		t.Errorf("with payment down the pass moved on to %s", next)
	}
	h.payments.setDown(false)
	r.pass(context.Background(), s, since)

	if got := testutil.ToFloat64(found.WithLabelValues(ChargedNotConfirmed)); got != 1 {
		t.Errorf("charged_not_confirmed = %v, want 1", got)
	}
	if got := testutil.ToFloat64(found.WithLabelValues(ConfirmedNotCharged)); got != 1 {
		t.Errorf("confirmed_not_charged = %v, want 1", got)
	}
	h.payments.mu.Lock()
	defer h.payments.mu.Unlock()
	if h.payments.refunds[charged] != 1 || h.payments.refunds[ok.ID] != 0 {
		t.Errorf("refunds = %v, want the cancelled-but-charged order's only", h.payments.refunds)
	}
}
