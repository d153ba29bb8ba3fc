package order

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/sqldb"
)

func openStore(t *testing.T, databaseURL string) *SQLStore {
	t.Helper()
	ctx := context.Background()
	db, err := sqldb.Open(ctx, databaseURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if err := sqldb.Migrate(ctx, db, Migrations()); err != nil {
		t.Fatal(err)
	}
	return NewStore(db)
}

func TestStore(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s := openStore(t, databaseURL)
		o := Order{ID: "o1", UserID: "u1", Status: StatusPending, Currency: "USD",
			Items:     []Item{{ProductID: "p1", Quantity: 2}, {ProductID: "p2", Quantity: 1, UnitPriceCents: 250}},
			CreatedAt: time.Date(2026, 11, 22, 9, 30, 0, 5000, time.UTC)}
		if err := s.Insert(ctx, o, "key-1", "hash-1"); err != nil {
			t.Fatal(err)
		}
		got, err := s.Get(ctx, "o1")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("Get (-want +got):\n%s", diff)
		}
		byKey, hash, err := s.GetByKey(ctx, "u1", "key-1")
		if err != nil || hash != "hash-1" || byKey.ID != "o1" || len(byKey.Items) != 2 {
			t.Errorf("GetByKey = %+v %q %v", byKey, hash, err)
		}

		// The same key from the same user is refused, and nothing of the
		// second order is written.
		dup := o
		dup.ID = "o2"
		err = s.Insert(ctx, dup, "key-1", "hash-2")
		if e := errs.As(err); e.Code != "idempotency_key_used" {
			t.Errorf("duplicate key: %v", err)
		}
		if _, err := s.Get(ctx, "o2"); !errs.Is(err, errs.NotFound) {
			t.Errorf("half-written order o2: %v", err)
		}
		// Another user may use the same key.
		other := o
		other.ID, other.UserID = "o3", "u2"
		if err := s.Insert(ctx, other, "key-1", "hash-1"); err != nil {
			t.Errorf("same key, other user: %v", err)
		}
		if _, _, err := s.GetByKey(ctx, "u1", "nope"); !errs.Is(err, errs.NotFound) {
			t.Errorf("GetByKey(nope) = %v", err)
		}
	})
}
