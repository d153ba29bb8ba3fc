package payment

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/payment/client"
)

// refundEvents returns the payment.refunded events in the outbox, oldest
// first, each with its subject id.
func refundEvents(t *testing.T, db *sqlx.DB) []RefundEvent {
	t.Helper()
	out := []RefundEvent{}
	for _, env := range kittest.Outbox[events.Envelope](t, db) {
		if env.Type != events.PaymentRefunded {
			continue
		}
		var data RefundEvent
		if err := json.Unmarshal(env.Data, &data); err != nil {
			t.Fatal(err)
		}
		if env.Source != Name || env.SubjectID != data.PaymentID {
			t.Errorf("refund event from %q about %q, want payment about %q", env.Source, env.SubjectID, data.PaymentID)
		}
		out = append(out, data)
	}
	return out
}

// simulated returns the simulator's own records of orderID: the charge id
// and the refund id ("" when it has none).
func simulated(t *testing.T, db *sqlx.DB, orderID string) (chargeID, refundID string) {
	t.Helper()
	var charges, refunds []string
	if err := db.Select(&charges, db.Rebind(`SELECT charge_id FROM simulator_charges WHERE order_id = ?`), orderID); err != nil {
		t.Fatal(err)
	}
	if err := db.Select(&refunds, db.Rebind(`SELECT refund_id FROM simulator_refunds WHERE order_id = ?`), orderID); err != nil {
		t.Fatal(err)
	}
	if len(charges) > 0 {
		chargeID = charges[0]
	}
	if len(refunds) > 0 {
		refundID = refunds[0]
	}
	return chargeID, refundID
}

func mustCharge(t *testing.T, svc Service, orderID, token string) Payment {
	t.Helper()
	p, _, err := svc.Charge(context.Background(), chargeReq(orderID, token))
	if err != nil || p.Status != StatusSucceeded {
		t.Fatalf("Charge(%s, %s) = %+v, %v", orderID, token, p, err)
	}
	return p
}

// TestRefundOnce: a refund twice, and ten at once, is one refund at the
// provider, one record and one payment.refunded event; the payment stays
// SUCCEEDED.
func TestRefundOnce(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		f := newFixture(t, databaseURL, Config{})
		ctx := context.Background()
		p := mustCharge(t, f.svc, "o1", CardVisa)

		r, err := f.svc.Refund(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		want := Refund{ID: r.ID, PaymentID: p.ID, OrderID: "o1", UserID: "u1", Status: RefundSucceeded, AmountCents: 4800,
			Currency: "USD", CreatedAt: r.CreatedAt, ProviderRefundID: r.ProviderRefundID, UpdatedAt: r.UpdatedAt}
		if diff := cmp.Diff(want, r); diff != "" || r.ID == "" || r.ProviderRefundID == "" {
			t.Errorf("refund (-want +got):\n%s", diff)
		}
		if _, simRefund := simulated(t, f.db, "o1"); simRefund != r.ProviderRefundID {
			t.Errorf("provider refund id %q, the simulator recorded %q", r.ProviderRefundID, simRefund)
		}
		again, err := f.svc.Refund(ctx, "o1")
		if err != nil || again != r {
			t.Errorf("repeat = %+v, %v; want %+v", again, err, r)
		}

		// Concurrent refunds of another order: one refund for all.
		mustCharge(t, f.svc, "o2", CardVisa)
		f.provider.sim.Latency = 50 * time.Millisecond // the others arrive while it refunds
		var wg sync.WaitGroup
		ids := make(chan string, 10)
		for range 10 {
			wg.Go(func() {
				r, err := f.svc.Refund(ctx, "o2")
				if err != nil || r.Status != RefundSucceeded {
					t.Errorf("Refund = %+v, %v", r, err)
					return
				}
				ids <- r.ID
			})
		}
		wg.Wait()
		close(ids)
		distinct := map[string]bool{}
		for id := range ids {
			distinct[id] = true
		}
		if len(distinct) != 1 || f.provider.refunds.Load() != 2 {
			t.Errorf("%d refunds of o2, %d provider refund calls in all; want 1 and 2", len(distinct), f.provider.refunds.Load())
		}

		if got, _ := f.store.GetByOrder(ctx, "o1"); got.Status != StatusSucceeded {
			t.Errorf("refunded payment's status = %s, want %s (the refund is its own record)", got.Status, StatusSucceeded)
		}
		evs := refundEvents(t, f.db)
		if len(evs) != 2 || evs[0] != (RefundEvent{RefundID: r.ID, PaymentID: p.ID, OrderID: "o1", UserID: "u1", AmountCents: 4800, Currency: "USD"}) ||
			evs[1].OrderID != "o2" {
			t.Errorf("refund events = %+v", evs)
		}
	})
}

// TestRefundRefusals: nothing to refund is a refusal with a reason, and
// writes nothing; a payment of unknown outcome is not refunded yet.
func TestRefundRefusals(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{ProviderTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	for order, token := range map[string]string{"o-declined": CardDeclined, "o-error": CardError, "o-stolen": "tok_stolen"} {
		f.svc.Charge(ctx, chargeReq(order, token))
	}
	f.provider.down.Store(true)
	if _, _, err := f.svc.Charge(ctx, chargeReq("o-unknown", CardVisa)); errs.Reason(err) != client.ReasonPaymentPending {
		t.Fatalf("charge while the provider is down: %v", err)
	}
	tests := []struct {
		orderID    string
		wantKind   errs.Kind
		wantReason string
	}{
		{"o-none", errs.NotFound, client.ReasonPaymentNotFound},
		{"not an id", errs.NotFound, client.ReasonPaymentNotFound},
		{"", errs.Invalid, client.ReasonInvalidOrderID},
		{"o-declined", errs.Conflict, client.ReasonNotRefundable},
		{"o-error", errs.Conflict, client.ReasonNotRefundable},
		{"o-stolen", errs.Conflict, client.ReasonNotRefundable},
		{"o-unknown", errs.Unavailable, client.ReasonPaymentPending},
	}
	for _, tt := range tests {
		t.Run(tt.orderID, func(t *testing.T) {
			_, err := f.svc.Refund(ctx, tt.orderID)
			if errs.KindOf(err) != tt.wantKind || errs.Reason(err) != tt.wantReason {
				t.Errorf("Refund = %v, want %v %s", err, tt.wantKind, tt.wantReason)
			}
			if _, err := f.store.GetRefundByOrder(ctx, tt.orderID); !errs.Is(err, errs.NotFound) {
				t.Errorf("a refused refund was recorded: %v", err)
			}
		})
	}
	if f.provider.refunds.Load() != 0 || len(refundEvents(t, f.db)) != 0 {
		t.Errorf("%d provider refunds, events %+v; want none", f.provider.refunds.Load(), refundEvents(t, f.db))
	}

	// Once the provider answers, the unknown payment's outcome is known and
	// it is refunded.
	f.provider.down.Store(false)
	if r, err := f.svc.Refund(ctx, "o-unknown"); err != nil || r.Status != RefundSucceeded {
		t.Errorf("refund after recovery = %+v, %v", r, err)
	}
}

// TestRefundAfterRestart: a new process over the same database answers a
// refund done before with the same refund, and one whose answer was lost
// with the one the provider made: never a second.
func TestRefundAfterRestart(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		cfg := Config{ProviderTimeout: 100 * time.Millisecond}
		before := newFixture(t, databaseURL, cfg)
		ctx := context.Background()
		mustCharge(t, before.svc, "o-done", CardVisa)
		done, err := before.svc.Refund(ctx, "o-done")
		if err != nil {
			t.Fatal(err)
		}
		// tok_timeout loses the first answer of the charge and of the refund.
		before.svc.Charge(ctx, chargeReq("o-lost", CardTimeout))
		p := mustCharge(t, before.svc, "o-lost", CardTimeout)
		_, err = before.svc.Refund(ctx, "o-lost")
		if e := errs.As(err); e.Kind != errs.Unavailable || errs.Reason(err) != client.ReasonRefundPending || e.Details["refund_id"] == nil {
			t.Fatalf("refund with the answer lost = %v, want Unavailable %s naming the refund", err, client.ReasonRefundPending)
		}
		_, lostAtProvider := simulated(t, before.db, "o-lost")
		if lostAtProvider == "" {
			t.Fatal("the simulator did not record the refund whose answer was lost")
		}

		after := newFixtureOver(before.db, cfg)
		if again, err := after.svc.Refund(ctx, "o-done"); err != nil || again != done {
			t.Errorf("after restart = %+v, %v; want %+v", again, err, done)
		}
		r, err := after.svc.Refund(ctx, "o-lost")
		if err != nil || r.Status != RefundSucceeded || r.ProviderRefundID != lostAtProvider || r.PaymentID != p.ID {
			t.Errorf("lost refund after restart = %+v, %v; want the provider's %s", r, err, lostAtProvider)
		}
		if _, atProvider := simulated(t, after.db, "o-lost"); atProvider != lostAtProvider {
			t.Errorf("the simulator's refund changed: %s, was %s", atProvider, lostAtProvider)
		}
		if evs := refundEvents(t, after.db); len(evs) != 2 || evs[1].RefundID != r.ID {
			t.Errorf("refund events = %+v", evs)
		}
	})
}

// TestResolverSettlesUnknownRefund: nobody asks again; the resolver pass
// records the refund the provider made.
func TestResolverSettlesUnknownRefund(t *testing.T) {
	f := newFixture(t, sqliteURL(t), Config{ProviderTimeout: 50 * time.Millisecond})
	ctx := context.Background()
	f.svc.Charge(ctx, chargeReq("o1", CardTimeout))
	mustCharge(t, f.svc, "o1", CardTimeout)
	if _, err := f.svc.Refund(ctx, "o1"); errs.Reason(err) != client.ReasonRefundPending {
		t.Fatalf("Refund = %v", err)
	}
	if r, _ := f.store.GetRefundByOrder(ctx, "o1"); r.Status != RefundUnknown {
		t.Errorf("refund after the lost answer = %+v, want UNKNOWN", r)
	}
	if n, err := f.svc.SettleUnknown(ctx); n != 1 || err != nil {
		t.Fatalf("SettleUnknown = %d, %v; want 1", n, err)
	}
	r, _ := f.store.GetRefundByOrder(ctx, "o1")
	if _, atProvider := simulated(t, f.db, "o1"); r.Status != RefundSucceeded || r.ProviderRefundID != atProvider {
		t.Errorf("refund = %+v, want SUCCEEDED as %s", r, atProvider)
	}
	if evs := refundEvents(t, f.db); len(evs) != 1 || evs[0].RefundID != r.ID {
		t.Errorf("refund events = %+v", evs)
	}
}

// TestChargeAfterRestart: the provider's answer to the first charge was
// lost, then payment restarted. The new process (a new simulator over the
// same database) learns the recorded charge; it never charges again.
func TestChargeAfterRestart(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		cfg := Config{ProviderTimeout: 100 * time.Millisecond, StaleAfter: time.Millisecond}
		before := newFixture(t, databaseURL, cfg)
		ctx := context.Background()
		if _, _, err := before.svc.Charge(ctx, chargeReq("o-retried", CardTimeout)); errs.Reason(err) != client.ReasonPaymentPending {
			t.Fatalf("Charge = %v", err)
		}
		if _, _, err := before.svc.Charge(ctx, chargeReq("o-resolved", CardTimeout)); errs.Reason(err) != client.ReasonPaymentPending {
			t.Fatalf("Charge = %v", err)
		}
		retried, _ := simulated(t, before.db, "o-retried")
		resolved, _ := simulated(t, before.db, "o-resolved")
		if retried == "" || resolved == "" {
			t.Fatal("the simulator did not record the charges whose answers were lost")
		}

		after := newFixtureOver(before.db, cfg)
		p, created, err := after.svc.Charge(ctx, chargeReq("o-retried", CardTimeout))
		if err != nil || created || p.Status != StatusSucceeded || p.ChargeID != retried {
			t.Errorf("charge asked again after restart = %+v created=%v err=%v; want SUCCEEDED as %s", p, created, err, retried)
		}
		if n, err := after.svc.SettleUnknown(ctx); n != 1 || err != nil {
			t.Errorf("SettleUnknown = %d, %v; want 1", n, err)
		}
		if p, _ := after.store.GetByOrder(ctx, "o-resolved"); p.Status != StatusSucceeded || p.ChargeID != resolved {
			t.Errorf("resolved after restart = %+v; want SUCCEEDED as %s", p, resolved)
		}
		if n := after.provider.charges.Load(); n != 0 {
			t.Errorf("the restarted process sent %d charges; the lookups were enough", n)
		}
		if ev := outboxEvents(t, after.db); len(ev) != 2 {
			t.Errorf("events = %+v, want one payment.succeeded each", ev)
		}
	})
}

// TestSimulatorKeepsItsRecords: a new simulator over the same database
// (a restarted process) answers a repeated charge or refund with the
// record, without waiting (no lost answer twice) and without a new one.
func TestSimulatorKeepsItsRecords(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		_, db := openStore(t, databaseURL)
		ctx := context.Background()
		short := func() (context.Context, context.CancelFunc) { return context.WithTimeout(ctx, 50*time.Millisecond) }
		first := NewSimulator(db, 0)
		lost := ProviderCharge{OrderID: "o-lost", AmountCents: 4800, Currency: "USD", CardToken: CardTimeout}
		c1, cancel := short()
		if _, err := first.Charge(c1, lost); err == nil {
			t.Fatal("first tok_timeout charge answered")
		}
		cancel()
		declined, err := first.Charge(ctx, ProviderCharge{OrderID: "o-declined", AmountCents: 4800, Currency: "USD", CardToken: CardDeclined})
		if err != nil || declined.Outcome != OutcomeDeclined {
			t.Fatalf("declined = %+v, %v", declined, err)
		}
		if _, err := first.Charge(ctx, ProviderCharge{OrderID: "o-stolen", AmountCents: 1, Currency: "USD", CardToken: "tok_stolen"}); err != ErrInvalidToken {
			t.Errorf("unknown card = %v", err)
		}
		chargeID, _ := simulated(t, db, "o-lost")

		second := NewSimulator(db, 0)
		c2, cancel := short()
		got, err := second.Charge(c2, lost)
		cancel()
		if err != nil || got != (Charge{ID: chargeID, Outcome: OutcomeApproved}) {
			t.Errorf("charge again after restart = %+v, %v; want the recorded %s", got, err, chargeID)
		}
		if got, err := second.Lookup(ctx, "o-declined"); err != nil || got != declined {
			t.Errorf("Lookup = %+v, %v; want %+v", got, err, declined)
		}
		if _, err := second.Lookup(ctx, "o-stolen"); err != ErrNoCharge {
			t.Errorf("Lookup of a refused token = %v, want ErrNoCharge", err)
		}

		// Refunds: lost once, then the recorded one, before and after a restart.
		refund := ProviderRefund{OrderID: "o-lost", ChargeID: chargeID, AmountCents: 4800, Currency: "USD"}
		c3, cancel := short()
		if _, err := second.Refund(c3, refund); err == nil {
			t.Fatal("first tok_timeout refund answered")
		}
		cancel()
		_, refundID := simulated(t, db, "o-lost")
		for i, sim := range []*Simulator{second, NewSimulator(db, 0)} {
			if got, err := sim.Refund(ctx, refund); err != nil || got.ID != refundID {
				t.Errorf("refund again #%d = %+v, %v; want the recorded %s", i, got, err, refundID)
			}
		}
		for name, req := range map[string]ProviderRefund{
			"declined charge": {OrderID: "o-declined", ChargeID: declined.ID, AmountCents: 4800, Currency: "USD"},
			"part of it":      {OrderID: "o-lost", ChargeID: chargeID, AmountCents: 100, Currency: "USD"},
		} {
			if _, err := second.Refund(ctx, req); err != ErrNotRefundable {
				t.Errorf("%s: %v, want ErrNotRefundable", name, err)
			}
		}
		for name, req := range map[string]ProviderRefund{
			"no charge":       {OrderID: "o-none", ChargeID: "ch_x", AmountCents: 4800, Currency: "USD"},
			"another charge":  {OrderID: "o-lost", ChargeID: "ch_x", AmountCents: 4800, Currency: "USD"},
			"a refused token": {OrderID: "o-stolen", AmountCents: 1, Currency: "USD"},
		} {
			if _, err := second.Refund(ctx, req); err != ErrNoCharge {
				t.Errorf("%s: %v, want ErrNoCharge", name, err)
			}
		}
	})
}
