package events

import (
	"context"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/kittest"
)

func TestOutboxMetricsCountWhatWaits(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		db := kittest.DB(t, dbURL, Migrations())
		outbox := NewOutbox(propagation.TraceContext{}, func() {})
		for _, id := range []string{"o-1", "o-2"} {
			if err := outbox.InTx(context.Background(), db, func(tx *Tx) error {
				return tx.Record(context.Background(), mustNew(t, "order", OrderCreated, id))
			}); err != nil {
				t.Fatal(err)
			}
		}
		m := NewOutboxMetrics(db, "order")
		want := `
# HELP meshop_outbox_unsent Events recorded in the outbox and not yet published.
# TYPE meshop_outbox_unsent gauge
meshop_outbox_unsent{service="order"} 2
`
		if err := testutil.CollectAndCompare(m, strings.NewReader(want), "meshop_outbox_unsent"); err != nil {
			t.Error(err)
		}
		if n := testutil.CollectAndCount(m, "meshop_outbox_oldest_unsent_age_seconds"); n != 1 {
			t.Errorf("oldest unsent age: %d series", n)
		}
	})
}
