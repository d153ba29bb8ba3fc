package order

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
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
		if diff := cmp.Diff(o, got, cmpopts.IgnoreFields(Order{}, "UpdatedAt")); diff != "" {
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
		// Transitions need the claim, and the expected step.
		now := time.Now()
		if ok, err := s.Claim(ctx, "o1", "run-a", now.Add(time.Minute), now); !ok || err != nil {
			t.Fatalf("Claim = %v, %v", ok, err)
		}
		if ok, _ := s.Claim(ctx, "o1", "run-b", now.Add(time.Minute), now); ok {
			t.Error("a second run claimed a held order")
		}
		if err := s.SetPriced(ctx, "o1", "run-b", priced, 1900, "USD"); !errors.Is(err, errClaimLost) {
			t.Errorf("SetPriced without the claim = %v, want errClaimLost", err)
		}
		if pending, err := s.Pending(ctx, time.Now().Add(time.Hour), now, 10); err != nil || len(pending) != 0 {
			t.Errorf("Pending lists a claimed order: %+v, %v", pending, err)
		}
		if err := s.SetPriced(ctx, "o1", "run-a", priced, 1900, "USD"); err != nil {
			t.Fatal(err)
		}
		if err := s.SetStep(ctx, "o1", "run-a", StepCreated, StepCharging); !errors.Is(err, errClaimLost) {
			t.Errorf("SetStep from a step the order left = %v, want errClaimLost", err)
		}
		// A claim whose lease ran out is anyone's.
		later := now.Add(2 * time.Minute)
		if pending, err := s.Pending(ctx, time.Now().Add(time.Hour), later, 10); err != nil || len(pending) != 1 || pending[0].Step != StepReserved {
			t.Errorf("Pending = %+v, %v", pending, err)
		}
		if ok, _ := s.Claim(ctx, "o1", "run-b", later.Add(time.Minute), later); !ok {
			t.Error("an expired claim could not be taken")
		}
		if err := s.SetStep(ctx, "o1", "run-a", StepReserved, StepCharging); !errors.Is(err, errClaimLost) {
			t.Errorf("SetStep by the run whose claim expired = %v, want errClaimLost", err)
		}
		if err := s.Release(ctx, "o1", "run-b"); err != nil {
			t.Fatal(err)
		}
		if ok, _ := s.Claim(ctx, "o1", "run-a", later.Add(time.Minute), later); !ok {
			t.Error("a released claim could not be taken")
		}
		pay := "pay-1"
		confirmed, _ := orderEvent("order.confirmed", o)
		if done, err := s.Finish(ctx, "o1", "run-b", StatusConfirmed, &pay, nil, confirmed); done || err != nil {
			t.Errorf("Finish by a run without the claim = %v, %v; want false", done, err)
		}
		if done, err := s.Finish(ctx, "o1", "run-a", StatusConfirmed, &pay, nil, confirmed); !done || err != nil {
			t.Fatalf("Finish = %v, %v", done, err)
		}
		reason := "late"
		cancelled, _ := orderEvent("order.cancelled", o)
		if done, err := s.Finish(ctx, "o1", "run-a", StatusCancelled, nil, &reason, cancelled); done || err != nil {
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
		reused := o
		reused.ID, reused.CreatedAt = "o3", o.CreatedAt.Add(DefaultKeyTTL+time.Minute)
		reusedEvent, _ := orderEvent("order.created", reused)
		sinceLater := reused.CreatedAt.Add(-DefaultKeyTTL)
		if _, _, err := s.GetByKey(ctx, "u1", "key-1", sinceLater); !errs.Is(err, errs.NotFound) {
			t.Errorf("an expired key still replays: %v", err)
		}
		if err := s.Create(ctx, reused, "key-1", "hash-3", reusedEvent, sinceLater); err != nil {
			t.Fatalf("reusing an expired key: %v", err)
		}
		if byKey, hash, err := s.GetByKey(ctx, "u1", "key-1", sinceLater); err != nil || byKey.ID != "o3" || hash != "hash-3" {
			t.Errorf("GetByKey after reuse = %s %q %v, want o3", byKey.ID, hash, err)
		}
		if old, err := s.Get(ctx, "o1"); err != nil || old.Status != StatusConfirmed {
			t.Errorf("the first order after its key was reused: %+v %v", old, err)
		}
		if ok, _ := s.Claim(ctx, "o3", "run-c", later.Add(time.Minute), later); !ok {
			t.Fatal("could not claim o3")
		}
		if _, err := s.Finish(ctx, "o3", "run-c", StatusCancelled, nil, &reason, cancelled); err != nil {
			t.Fatal(err)
		}
		if pending, _ := s.Pending(ctx, time.Now().Add(time.Hour), later, 10); len(pending) != 0 {
			t.Errorf("finished order still pending: %+v", pending)
		}
	})
}
