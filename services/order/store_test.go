package order

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
)

func openStore(t *testing.T, databaseURL string) *SQLStore {
	db := kittest.DB(t, databaseURL, Migrations(), events.Migrations())
	return NewStore(db, events.NewOutbox(propagation.TraceContext{}, nil))
}

func TestStore(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s := openStore(t, databaseURL)
		o := Order{ID: "o1", UserID: "u1", Status: StatusPending, Currency: "USD", CardToken: "tok_visa", Step: StepCreated,
			Items:     []Item{{ProductID: "p1", Quantity: 2}, {ProductID: "p2", Quantity: 1}},
			CreatedAt: time.Date(2026, 11, 22, 9, 30, 0, 5000, time.UTC)}
		created, _ := orderEvent("order.created", o)
		keysSince := o.CreatedAt.Add(-DefaultKeyTTL)
		if err := s.Create(ctx, o, "key-1", "hash-1", created, keysSince); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
		byKey, hash, err := s.GetByKey(ctx, "u1", "key-1", keysSince)
		if err != nil || hash != "hash-1" || byKey.ID != "o1" || len(byKey.Items) != 2 {
			t.Errorf("GetByKey = %+v %q %v", byKey, hash, err)
		}

		// The same key from the same user is refused, and nothing of the
		// second order (nor its event) is written.
		dup := o
		dup.ID = "o2"
		dupEvent, _ := orderEvent("order.created", dup)
		if err := s.Create(ctx, dup, "key-1", "hash-2", dupEvent, keysSince); errs.As(err).Code != "idempotency_key_used" {
			t.Errorf("duplicate key: %v", err)
		}
		if _, err := s.Get(ctx, "o2"); !errs.Is(err, errs.NotFound) {
			t.Errorf("half-written order o2: %v", err)
		}
		var outbox int
		if err := s.db.Get(&outbox, "SELECT COUNT(*) FROM outbox"); err != nil || outbox != 1 {
			t.Errorf("outbox rows = %d (%v), want 1", outbox, err)
		}

		// Pricing, then finishing: only the first finish wins.
		priced := []Item{{ProductID: "p1", Quantity: 2, UnitPriceCents: 350}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 1200}}
		if err := s.SetPriced(ctx, "o1", priced, 1900, "USD"); err != nil {
			t.Fatal(err)
		}
		if pending, err := s.Pending(ctx, time.Now().Add(time.Hour), 10); err != nil || len(pending) != 1 || pending[0].Step != StepReserved {
			t.Errorf("Pending = %+v, %v", pending, err)
		}
		pay := "pay-1"
		confirmed, _ := orderEvent("order.confirmed", o)
		if done, err := s.Finish(ctx, "o1", StatusConfirmed, &pay, nil, confirmed); !done || err != nil {
			t.Fatalf("Finish = %v, %v", done, err)
		}
		reason := "late"
		cancelled, _ := orderEvent("order.cancelled", o)
		if done, err := s.Finish(ctx, "o1", StatusCancelled, nil, &reason, cancelled); done || err != nil {
			t.Errorf("second Finish = %v, %v; want false, nil", done, err)
		}
		got, _ = s.Get(ctx, "o1")
		if got.Status != StatusConfirmed || got.TotalCents != 1900 || got.Items[1].UnitPriceCents != 1200 || *got.PaymentID != "pay-1" {
			t.Errorf("final order = %+v", got)
		}
		if err := s.db.Get(&outbox, "SELECT COUNT(*) FROM outbox"); err != nil || outbox != 2 {
			t.Errorf("outbox rows = %d (%v), want 2 (created, confirmed)", outbox, err)
		}

		// Once the key's TTL has passed since o1 was created, the key
		// names a new order; o1 stays as it was, its key renamed.
		later := o
		later.ID, later.CreatedAt = "o3", o.CreatedAt.Add(DefaultKeyTTL+time.Minute)
		laterEvent, _ := orderEvent("order.created", later)
		sinceLater := later.CreatedAt.Add(-DefaultKeyTTL)
		if _, _, err := s.GetByKey(ctx, "u1", "key-1", sinceLater); !errs.Is(err, errs.NotFound) {
			t.Errorf("an expired key still replays: %v", err)
		}
		if err := s.Create(ctx, later, "key-1", "hash-3", laterEvent, sinceLater); err != nil {
			t.Fatalf("reusing an expired key: %v", err)
		}
		if byKey, hash, err := s.GetByKey(ctx, "u1", "key-1", sinceLater); err != nil || byKey.ID != "o3" || hash != "hash-3" {
			t.Errorf("GetByKey after reuse = %s %q %v, want o3", byKey.ID, hash, err)
		}
		if old, err := s.Get(ctx, "o1"); err != nil || old.Status != StatusConfirmed {
			t.Errorf("the first order after its key was reused: %+v %v", old, err)
		}
		if _, err := s.Finish(ctx, "o3", StatusCancelled, nil, &reason, cancelled); err != nil {
			t.Fatal(err)
		}
		if pending, _ := s.Pending(ctx, time.Now().Add(time.Hour), 10); len(pending) != 0 {
			t.Errorf("finished order still pending: %+v", pending)
		}
	})
}
