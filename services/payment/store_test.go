package payment

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
)

func openStore(t *testing.T, databaseURL string) (*SQLStore, *sqlx.DB) {
	db := kittest.DB(t, databaseURL, Migrations(), events.Migrations())
	return NewStore(db, events.NewOutbox(propagation.TraceContext{}, nil)), db
}

func sqliteURL(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "payment.db")
}

// recordedEvent is an outbox row, decoded.
type recordedEvent struct {
	Type      string
	SubjectID string
	Data      Event
}

// outboxEvents returns the payment events in the outbox, oldest first.
func outboxEvents(t *testing.T, db *sqlx.DB) []recordedEvent {
	t.Helper()
	out := []recordedEvent{}
	for _, env := range kittest.Outbox[events.Envelope](t, db) {
		var data Event
		if err := json.Unmarshal(env.Data, &data); err != nil {
			t.Fatal(err)
		}
		if env.Source != Name {
			t.Errorf("event source %q", env.Source)
		}
		out = append(out, recordedEvent{Type: env.Type, SubjectID: env.SubjectID, Data: data})
	}
	return out
}

func TestStore(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s, db := openStore(t, databaseURL)
		t0 := time.Date(2026, 11, 22, 10, 0, 0, 5000, time.UTC)
		p := Payment{ID: "pay1", OrderID: "o1", UserID: "u1", Status: StatusPending, AmountCents: 4800,
			Currency: "USD", CardToken: "tok_visa", CreatedAt: t0, UpdatedAt: t0}
		if err := s.Insert(ctx, p); err != nil {
			t.Fatal(err)
		}
		for name, get := range map[string]func() (Payment, error){
			"Get":        func() (Payment, error) { return s.Get(ctx, "pay1") },
			"GetByOrder": func() (Payment, error) { return s.GetByOrder(ctx, "o1") },
		} {
			got, err := get()
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(p, got); diff != "" {
				t.Errorf("%s (-want +got):\n%s", name, diff)
			}
		}
		// One payment per order.
		dup := p
		dup.ID = "pay2"
		if err := s.Insert(ctx, dup); errs.As(err).Code != "payment_exists" {
			t.Errorf("second payment for o1: %v", err)
		}
		if _, err := s.Get(ctx, "pay2"); !errs.Is(err, errs.NotFound) {
			t.Errorf("pay2 written: %v", err)
		}

		// Fresh PENDING is in flight; UNKNOWN and stale PENDING are unsettled.
		stale := Payment{ID: "pay3", OrderID: "o3", UserID: "u1", Status: StatusPending, AmountCents: 100,
			Currency: "USD", CardToken: "tok_visa", CreatedAt: t0.Add(-time.Hour), UpdatedAt: t0.Add(-time.Hour)}
		if err := s.Insert(ctx, stale); err != nil {
			t.Fatal(err)
		}
		unsettled, err := s.Unsettled(ctx, t0.Add(-time.Minute), 10)
		if err != nil || len(unsettled) != 1 || unsettled[0].ID != "pay3" {
			t.Errorf("Unsettled = %v, %v; want [pay3]", unsettled, err)
		}
		if err := s.MarkUnknown(ctx, "pay1", t0.Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if unsettled, _ := s.Unsettled(ctx, t0.Add(-time.Minute), 10); len(unsettled) != 2 {
			t.Errorf("Unsettled after MarkUnknown = %v", unsettled)
		}

		// Settle wins once; the loser writes nothing, event included.
		won := p
		won.Status, won.ChargeID, won.UpdatedAt = StatusSucceeded, "ch_1", t0.Add(2*time.Second)
		ev, _ := events.New(Name, events.PaymentSucceeded, "pay1", Event{PaymentID: "pay1", Status: StatusSucceeded})
		if ok, err := s.Settle(ctx, won, ev); !ok || err != nil {
			t.Fatalf("Settle = %v, %v", ok, err)
		}
		lost := p
		lost.Status, lost.Reason, lost.UpdatedAt = StatusFailed, "provider_error", t0.Add(3*time.Second)
		ev2, _ := events.New(Name, events.PaymentFailed, "pay1", Event{PaymentID: "pay1", Status: StatusFailed})
		if ok, err := s.Settle(ctx, lost, ev2); ok || err != nil {
			t.Errorf("second Settle = %v, %v; want false", ok, err)
		}
		got, _ := s.Get(ctx, "pay1")
		if got.Status != StatusSucceeded || got.ChargeID != "ch_1" || !got.UpdatedAt.Equal(won.UpdatedAt) {
			t.Errorf("after settle: %+v", got)
		}
		if ev := outboxEvents(t, db); len(ev) != 1 || ev[0].Type != events.PaymentSucceeded {
			t.Errorf("outbox = %+v", ev)
		}
		// MarkUnknown never reopens a settled payment.
		if err := s.MarkUnknown(ctx, "pay1", t0.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, "pay1"); got.Status != StatusSucceeded {
			t.Errorf("MarkUnknown reopened pay1: %+v", got)
		}

		// One refund per order; settled once, with its event.
		r := Refund{ID: "re1", PaymentID: "pay1", OrderID: "o1", UserID: "u1", Status: RefundPending, AmountCents: 4800,
			Currency: "USD", CreatedAt: t0.Add(4 * time.Second), UpdatedAt: t0.Add(4 * time.Second)}
		if err := s.InsertRefund(ctx, r); err != nil {
			t.Fatal(err)
		}
		dupRefund := r
		dupRefund.ID = "re2"
		if err := s.InsertRefund(ctx, dupRefund); errs.As(err).Code != "refund_exists" {
			t.Errorf("second refund for o1: %v", err)
		}
		if got, err := s.GetRefundByOrder(ctx, "o1"); err != nil || got != r {
			t.Errorf("GetRefundByOrder = %+v, %v; want %+v", got, err, r)
		}
		if _, err := s.GetRefundByOrder(ctx, "o3"); !errs.Is(err, errs.NotFound) {
			t.Errorf("refund of o3: %v", err)
		}
		if err := s.MarkRefundUnknown(ctx, "re1", t0.Add(5*time.Second)); err != nil {
			t.Fatal(err)
		}
		if rs, err := s.UnsettledRefunds(ctx, t0, 10); err != nil || len(rs) != 1 || rs[0].Status != RefundUnknown {
			t.Errorf("UnsettledRefunds = %+v, %v", rs, err)
		}
		done := r
		done.Status, done.ProviderRefundID, done.UpdatedAt = RefundSucceeded, "re_1", t0.Add(6*time.Second)
		refunded, _ := events.New(Name, events.PaymentRefunded, "pay1", RefundEvent{RefundID: "re1", PaymentID: "pay1"})
		for i, want := range []bool{true, false} {
			if ok, err := s.SettleRefund(ctx, done, refunded); ok != want || err != nil {
				t.Errorf("SettleRefund #%d = %v, %v; want %v", i, ok, err, want)
			}
		}
		if got, _ := s.GetRefund(ctx, "re1"); got != done {
			t.Errorf("settled refund = %+v, want %+v", got, done)
		}
		if rs, _ := s.UnsettledRefunds(ctx, t0, 10); len(rs) != 0 {
			t.Errorf("UnsettledRefunds after settling = %+v", rs)
		}
		if ev := outboxEvents(t, db); len(ev) != 2 || ev[1].Type != events.PaymentRefunded {
			t.Errorf("outbox = %+v", ev)
		}
	})
}
