package payment

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshop/meshop/localenv"
)

func TestMetricsReportPaymentsAndRefunds(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		f := newFixture(t, databaseURL, Config{})
		ctx := context.Background()
		// Nothing yet: every known status at 0.
		want := `
# HELP meshop_payment_payments Payments (charges) by status.
# TYPE meshop_payment_payments gauge
meshop_payment_payments{status="DECLINED"} 0
meshop_payment_payments{status="FAILED"} 0
meshop_payment_payments{status="PENDING"} 0
meshop_payment_payments{status="SUCCEEDED"} 0
meshop_payment_payments{status="UNKNOWN"} 0
# HELP meshop_payment_refunds Refunds by status.
# TYPE meshop_payment_refunds gauge
meshop_payment_refunds{status="PENDING"} 0
meshop_payment_refunds{status="SUCCEEDED"} 0
meshop_payment_refunds{status="UNKNOWN"} 0
`
		if err := testutil.CollectAndCompare(NewMetrics(f.db), strings.NewReader(want)); err != nil {
			t.Error(err)
		}

		mustCharge(t, f.svc, "o1", CardVisa)
		p2 := mustCharge(t, f.svc, "o2", CardVisa)
		f.svc.Charge(ctx, chargeReq("o3", CardDeclined))
		if _, err := f.svc.Refund(ctx, "o1"); err != nil {
			t.Fatal(err)
		}
		// A refund in flight, as a crash mid-refund leaves it.
		now := time.Now().UTC()
		if err := f.store.InsertRefund(ctx, Refund{ID: "ref-2", PaymentID: p2.ID, OrderID: "o2", UserID: "u1",
			Status: RefundPending, AmountCents: p2.AmountCents, Currency: p2.Currency, CreatedAt: now, UpdatedAt: now}); err != nil {
			t.Fatal(err)
		}
		// The figures come from the database: a fresh collector (another
		// instance, or after a restart) reports the same.
		want = `
# HELP meshop_payment_payments Payments (charges) by status.
# TYPE meshop_payment_payments gauge
meshop_payment_payments{status="DECLINED"} 1
meshop_payment_payments{status="FAILED"} 0
meshop_payment_payments{status="PENDING"} 0
meshop_payment_payments{status="SUCCEEDED"} 2
meshop_payment_payments{status="UNKNOWN"} 0
# HELP meshop_payment_refunds Refunds by status.
# TYPE meshop_payment_refunds gauge
meshop_payment_refunds{status="PENDING"} 1
meshop_payment_refunds{status="SUCCEEDED"} 1
meshop_payment_refunds{status="UNKNOWN"} 0
`
		if err := testutil.CollectAndCompare(NewMetrics(f.db), strings.NewReader(want)); err != nil {
			t.Error(err)
		}
	})
}

func TestMetricsReportAFailedQuery(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{})
	m := NewMetrics(f.db)
	f.db.Close()
	if err := testutil.CollectAndCompare(m, strings.NewReader("")); err == nil || !strings.Contains(err.Error(), "database is closed") {
		t.Errorf("collect over a closed database: %v, want the query's error", err)
	}
}
