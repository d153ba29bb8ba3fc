package product

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

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

// stockEvents returns the inventory.updated events in the outbox, oldest first.
func stockEvents(t *testing.T, db *sqlx.DB) []InventoryUpdated {
	t.Helper()
	out := []InventoryUpdated{}
	for _, env := range kittest.Outbox[events.Envelope](t, db) {
		if env.Type != events.InventoryUpdated {
			continue
		}
		var data InventoryUpdated
		if err := json.Unmarshal(env.Data, &data); err != nil {
			t.Fatal(err)
		}
		if env.Source != Name || env.SubjectID != data.ProductID {
			t.Errorf("envelope = %+v", env)
		}
		out = append(out, data)
	}
	return out
}

func stockOf(t *testing.T, s *SQLStore, id string) int {
	t.Helper()
	p, err := s.Get(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return p.Stock
}

func TestStoreCatalog(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s, db := openStore(t, databaseURL)

		all, err := s.List(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 12 || all[0].ID != "p-aeropress" {
			t.Fatalf("seeded catalog: %d products, first %+v", len(all), all[0])
		}
		for i := 1; i < len(all); i++ {
			if all[i-1].ID >= all[i].ID {
				t.Errorf("not ordered by id: %s before %s", all[i-1].ID, all[i].ID)
			}
		}
		after, err := s.List(ctx, "p-grinder", 2)
		if err != nil || len(after) != 2 || after[0].ID != "p-kettle" || after[1].ID != "p-mug" {
			t.Errorf("List(after p-grinder, 2) = %v, %v", after, err)
		}
		espresso, err := s.Get(ctx, "p-espresso")
		want := Product{ID: "p-espresso", Name: "Espresso Blend, 1 kg",
			Description: "Medium-dark roast of Brazilian and Ethiopian beans for espresso and milk drinks.",
			PriceCents:  2400, Currency: "USD", Stock: 100}
		if err != nil || !cmp.Equal(espresso, want) {
			t.Errorf("Get(p-espresso) = %+v, %v", espresso, err)
		}
		if _, err := s.Get(ctx, "p-nothing"); !errs.Is(err, errs.NotFound) {
			t.Errorf("Get(p-nothing) = %v", err)
		}

		tea := Product{ID: "p-tea", Name: "Tea", PriceCents: 500, Currency: "USD", Stock: 7}
		if err := s.Insert(ctx, tea); err != nil {
			t.Fatal(err)
		}
		if got, _ := s.Get(ctx, "p-tea"); !cmp.Equal(got, tea) {
			t.Errorf("Get(p-tea) = %+v", got)
		}
		err = s.Insert(ctx, tea)
		if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "product_exists" {
			t.Errorf("duplicate insert: %v", err)
		}
		if diff := cmp.Diff([]InventoryUpdated{{"p-tea", 7}}, stockEvents(t, db)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func TestStoreReservationLifecycle(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s, db := openStore(t, databaseURL)

		items := []ItemRequest{{"p-mug", 2}, {"p-espresso", 3}}
		r, created, err := s.Reserve(ctx, "o1", items)
		want := Reservation{OrderID: "o1", Status: StatusReserved, Items: []ReservedItem{
			{ProductID: "p-espresso", Quantity: 3, UnitPriceCents: 2400, Currency: "USD"},
			{ProductID: "p-mug", Quantity: 2, UnitPriceCents: 1800, Currency: "USD"},
		}}
		if err != nil || !created {
			t.Fatalf("Reserve = %v, created %v", err, created)
		}
		if diff := cmp.Diff(want, r); diff != "" {
			t.Errorf("Reserve (-want +got):\n%s", diff)
		}
		if stockOf(t, s, "p-espresso") != 97 || stockOf(t, s, "p-mug") != 118 {
			t.Errorf("stock after reserve: espresso %d mug %d", stockOf(t, s, "p-espresso"), stockOf(t, s, "p-mug"))
		}
		// A repeat touches no stock and returns the reservation.
		again, created, err := s.Reserve(ctx, "o1", items)
		if err != nil || created || !cmp.Equal(want, again) || stockOf(t, s, "p-espresso") != 97 {
			t.Errorf("repeat = %+v created=%v err=%v", again, created, err)
		}

		got, err := s.Commit(ctx, "o1")
		if err != nil || got.Status != StatusCommitted {
			t.Errorf("Commit = %+v, %v", got, err)
		}
		// Release after commit changes nothing and reports COMMITTED.
		got, err = s.Release(ctx, "o1")
		if err != nil || got.Status != StatusCommitted || stockOf(t, s, "p-espresso") != 97 {
			t.Errorf("Release after commit = %+v, %v", got, err)
		}

		if _, _, err := s.Reserve(ctx, "o2", []ItemRequest{{"p-tamper", 5}}); err != nil {
			t.Fatal(err)
		}
		got, err = s.Release(ctx, "o2")
		if err != nil || got.Status != StatusReleased || stockOf(t, s, "p-tamper") != 45 {
			t.Errorf("Release = %+v, %v; tamper stock %d", got, err, stockOf(t, s, "p-tamper"))
		}
		// A second release gives nothing back twice.
		if got, err := s.Release(ctx, "o2"); err != nil || got.Status != StatusReleased || stockOf(t, s, "p-tamper") != 45 {
			t.Errorf("second Release = %+v, %v; tamper stock %d", got, err, stockOf(t, s, "p-tamper"))
		}
		if got, err := s.Commit(ctx, "o2"); err != nil || got.Status != StatusReleased {
			t.Errorf("Commit after release = %+v, %v", got, err)
		}

		// Releasing an order that never reserved leaves a tombstone: its
		// late reserve takes nothing.
		if got, err := s.Release(ctx, "o3"); err != nil || got.Status != StatusReleased || len(got.Items) != 0 {
			t.Errorf("Release(unknown) = %+v, %v", got, err)
		}
		late, created, err := s.Reserve(ctx, "o3", []ItemRequest{{"p-kettle", 1}})
		if err != nil || created || late.Status != StatusReleased || stockOf(t, s, "p-kettle") != 40 {
			t.Errorf("late Reserve = %+v created=%v err=%v", late, created, err)
		}
		if _, err := s.Commit(ctx, "o4"); !errs.Is(err, errs.NotFound) {
			t.Errorf("Commit(unknown) = %v", err)
		}

		wantEvents := []InventoryUpdated{{"p-espresso", 97}, {"p-mug", 118}, {"p-tamper", 40}, {"p-tamper", 45}}
		if diff := cmp.Diff(wantEvents, stockEvents(t, db)); diff != "" {
			t.Errorf("events (-want +got):\n%s", diff)
		}
	})
}

func TestStoreReserveAllOrNothing(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		s, db := openStore(t, databaseURL)
		tests := []struct {
			name        string
			items       []ItemRequest
			wantCode    string
			wantDetails map[string]any
		}{
			{"second item short", []ItemRequest{{"p-aeropress", 1}, {"p-cupping-set", 2}}, "out_of_stock",
				map[string]any{"product_id": "p-cupping-set", "requested": 2, "available": 1}},
			{"unknown product", []ItemRequest{{"p-aeropress", 1}, {"p-unicorn", 1}}, "unknown_product",
				map[string]any{"product_id": "p-unicorn"}},
		}
		for _, tt := range tests {
			_, _, err := s.Reserve(ctx, "o-"+tt.name, tt.items)
			e := errs.As(err)
			if e.Code != tt.wantCode || !cmp.Equal(e.Details, tt.wantDetails) {
				t.Errorf("%s: err = %v %v", tt.name, err, e.Details)
			}
			// Nothing half-written: no stock taken, no reservation, no event.
			if n := stockOf(t, s, "p-aeropress"); n != 60 {
				t.Errorf("%s: aeropress stock %d, want 60", tt.name, n)
			}
			if _, err := s.GetReservation(ctx, "o-"+tt.name); !errs.Is(err, errs.NotFound) {
				t.Errorf("%s: reservation written: %v", tt.name, err)
			}
		}
		if ev := stockEvents(t, db); len(ev) != 0 {
			t.Errorf("events of failed reservations: %v", ev)
		}
	})
}

func sqliteURL(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "product.db")
}
