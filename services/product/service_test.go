package product

import (
	"context"
	"fmt"
	"net/url"
	"sync"
	"testing"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/paging"
)

func TestServiceReservationRules(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		store, _ := openStore(t, databaseURL)
		svc := New(store)
		req := ReserveRequest{OrderID: "o1", Items: []ItemRequest{{"p-mug", 1}}}
		if _, created, err := svc.Reserve(ctx, req); err != nil || !created {
			t.Fatalf("Reserve = %v %v", created, err)
		}
		tests := []struct {
			name     string
			call     func() error
			wantKind errs.Kind
			wantCode string
		}{
			{"different items, same order", func() error {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: "o1", Items: []ItemRequest{{"p-mug", 2}}})
				return err
			}, errs.Conflict, "idempotency_mismatch"},
			{"commit", func() error { _, err := svc.Commit(ctx, "o1"); return err }, 0, ""},
			{"commit again", func() error { _, err := svc.Commit(ctx, "o1"); return err }, 0, ""},
			{"reserve after commit", func() error { _, _, err := svc.Reserve(ctx, req); return err }, 0, ""},
			{"release after commit", func() error { _, err := svc.Release(ctx, "o1"); return err }, errs.Conflict, "reservation_committed"},
			{"release unknown", func() error { _, err := svc.Release(ctx, "o2"); return err }, 0, ""},
			{"reserve after release", func() error {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: "o2", Items: []ItemRequest{{"p-mug", 1}}})
				return err
			}, errs.Conflict, "reservation_released"},
			{"commit after release", func() error { _, err := svc.Commit(ctx, "o2"); return err }, errs.Conflict, "reservation_released"},
			{"commit unknown", func() error { _, err := svc.Commit(ctx, "o3"); return err }, errs.NotFound, "reservation_not_found"},
			{"zero quantity", func() error {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: "o4", Items: []ItemRequest{{"p-mug", 0}}})
				return err
			}, errs.Validation, "invalid_reservation"},
			{"no items", func() error {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: "o4"})
				return err
			}, errs.Validation, "invalid_reservation"},
			{"unknown product", func() error {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: "o4", Items: []ItemRequest{{"no such/product", 1}}})
				return err
			}, errs.Validation, "unknown_product"},
		}
		for _, tt := range tests {
			err := tt.call()
			if tt.wantCode == "" {
				if err != nil {
					t.Errorf("%s: %v", tt.name, err)
				}
				continue
			}
			if e := errs.As(err); err == nil || e.Kind != tt.wantKind || e.Code != tt.wantCode {
				t.Errorf("%s: err = %v, want %s", tt.name, err, tt.wantCode)
			}
		}
		if n := stockOf(t, store, "p-mug"); n != 119 {
			t.Errorf("mug stock = %d, want 119 (one committed)", n)
		}
	})
}

// TestNoOversell races 50 reservations of one unit each for the last 10
// units: exactly 10 win, the others are out of stock, and stock ends at 0.
func TestNoOversell(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		store, db := openStore(t, databaseURL)
		svc := New(store)
		if err := store.Insert(ctx, Product{ID: "p-last", Name: "Last units", PriceCents: 100, Currency: "USD", Stock: 10}); err != nil {
			t.Fatal(err)
		}
		const buyers = 50
		var wg sync.WaitGroup
		results := make(chan error, buyers)
		for i := range buyers {
			wg.Go(func() {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: fmt.Sprintf("o-%d", i), Items: []ItemRequest{{"p-last", 1}}})
				results <- err
			})
		}
		wg.Wait()
		close(results)
		won := 0
		for err := range results {
			switch e := errs.As(err); {
			case err == nil:
				won++
			case e.Code != "out_of_stock":
				t.Errorf("unexpected error: %v", err)
			}
		}
		if won != 10 || stockOf(t, store, "p-last") != 0 {
			t.Errorf("%d reservations won, stock %d; want 10 and 0", won, stockOf(t, store, "p-last"))
		}
		var reserved int
		if err := db.Get(&reserved, db.Rebind(`SELECT COALESCE(SUM(quantity), 0) FROM reservation_items WHERE product_id = ?`), "p-last"); err != nil || reserved != 10 {
			t.Errorf("reserved units = %d (%v), want 10", reserved, err)
		}
	})
}

// TestConcurrentCrossedOrders reserves two products in opposite orders from
// many goroutines, and releases half: no deadlock, no lost update.
func TestConcurrentCrossedOrders(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		store, _ := openStore(t, databaseURL)
		svc := New(store)
		var wg sync.WaitGroup
		errc := make(chan error, 40)
		for i := range 20 {
			items := []ItemRequest{{"p-mug", 1}, {"p-scale", 1}}
			if i%2 == 1 {
				items = []ItemRequest{{"p-scale", 1}, {"p-mug", 1}}
			}
			wg.Go(func() {
				id := fmt.Sprintf("x-%d", i)
				if _, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: id, Items: items}); err != nil {
					errc <- err
					return
				}
				if i%2 == 0 {
					_, err := svc.Release(ctx, id)
					errc <- err
				}
			})
		}
		wg.Wait()
		close(errc)
		for err := range errc {
			if err != nil {
				t.Error(err)
			}
		}
		if mug, scale := stockOf(t, store, "p-mug"), stockOf(t, store, "p-scale"); mug != 110 || scale != 40 {
			t.Errorf("stock mug %d scale %d, want 110 and 40", mug, scale)
		}
	})
}

// TestConcurrentSameOrder sends one reservation 20 times at once: stock is
// taken once; one call creates, the others get the same reservation.
func TestConcurrentSameOrder(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		store, _ := openStore(t, databaseURL)
		svc := New(store)
		var wg sync.WaitGroup
		var mu sync.Mutex
		createdN := 0
		for range 20 {
			wg.Go(func() {
				r, created, err := svc.Reserve(ctx, ReserveRequest{OrderID: "same", Items: []ItemRequest{{"p-kettle", 2}}})
				if err != nil || r.Status != StatusReserved || len(r.Items) != 1 {
					t.Errorf("Reserve = %+v, %v", r, err)
				}
				mu.Lock()
				defer mu.Unlock()
				if created {
					createdN++
				}
			})
		}
		wg.Wait()
		if createdN != 1 || stockOf(t, store, "p-kettle") != 38 {
			t.Errorf("created %d times, kettle stock %d; want 1 and 38", createdN, stockOf(t, store, "p-kettle"))
		}
	})
}

func TestServiceCatalog(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t, sqliteURL(t))
	svc := New(store)

	var ids []string
	cursor := ""
	for pages := 0; ; pages++ {
		req, err := paging.FromQuery(url.Values{"limit": {"5"}, "cursor": {cursor}})
		if cursor == "" {
			req, err = paging.FromQuery(url.Values{"limit": {"5"}})
		}
		if err != nil {
			t.Fatal(err)
		}
		page, err := svc.List(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range page.Items {
			ids = append(ids, p.ID)
		}
		if page.NextCursor == "" {
			if pages != 2 || len(page.Items) != 2 {
				t.Errorf("last page %d has %d items; want page 2 with 2", pages, len(page.Items))
			}
			break
		}
		cursor = page.NextCursor
	}
	if len(ids) != 12 {
		t.Errorf("paged through %d products, want 12: %v", len(ids), ids)
	}
	// A full last page has no next cursor either.
	if page, err := svc.List(ctx, paging.Request{Limit: 12}); err != nil || page.NextCursor != "" || len(page.Items) != 12 {
		t.Errorf("List(12) = %d items, next %q, %v", len(page.Items), page.NextCursor, err)
	}

	np := NewProduct{Name: "Cold Brew Bottle", PriceCents: 1999, Stock: 3}
	if _, err := svc.Create(ctx, np); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("Create without identity = %v", err)
	}
	customer := auth.WithIdentity(ctx, auth.Identity{UserID: "u1", Role: auth.RoleCustomer})
	if _, err := svc.Create(customer, np); !errs.Is(err, errs.Forbidden) {
		t.Errorf("Create as customer = %v", err)
	}
	admin := auth.WithIdentity(ctx, auth.Identity{UserID: "u0", Role: auth.RoleAdmin})
	p, err := svc.Create(admin, np)
	if err != nil || p.Currency != "USD" || p.ID == "" {
		t.Fatalf("Create as admin = %+v, %v", p, err)
	}
	if got, err := svc.Get(ctx, p.ID); err != nil || got != p {
		t.Errorf("Get(created) = %+v, %v", got, err)
	}
}

func TestValidateProduct(t *testing.T) {
	tests := []struct {
		name  string
		np    NewProduct
		field string
	}{
		{"no name", NewProduct{PriceCents: 1}, "name"},
		{"negative price", NewProduct{Name: "A", PriceCents: -1}, "price_cents"},
		{"free", NewProduct{Name: "A", PriceCents: 0}, "price_cents"},
		{"negative stock", NewProduct{Name: "A", Stock: -1}, "stock"},
		{"bad currency", NewProduct{Name: "A", Currency: "dollars"}, "currency"},
		{"bad id", NewProduct{ID: "a/b", Name: "A"}, "id"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := validateProduct(tt.np)
			if e := errs.As(err); e.Kind != errs.Validation || e.Details[tt.field] == nil {
				t.Errorf("validate = %v %v, want a problem with %s", err, e.Details, tt.field)
			}
		})
	}
}

// TestReleaseRacesReserve releases orders while they reserve: whichever
// comes first, every order ends RELEASED and all stock is back.
func TestReleaseRacesReserve(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, databaseURL string) {
		ctx := context.Background()
		store, _ := openStore(t, databaseURL)
		svc := New(store)
		var wg sync.WaitGroup
		for i := range 20 {
			id := fmt.Sprintf("r-%d", i)
			wg.Go(func() {
				_, _, err := svc.Reserve(ctx, ReserveRequest{OrderID: id, Items: []ItemRequest{{"p-frother", 1}}})
				if err != nil && errs.As(err).Code != "reservation_released" {
					t.Errorf("Reserve(%s) = %v", id, err)
				}
			})
			wg.Go(func() {
				if r, err := svc.Release(ctx, id); err != nil || r.Status != StatusReleased {
					t.Errorf("Release(%s) = %+v, %v", id, r, err)
				}
			})
		}
		wg.Wait()
		for i := range 20 {
			if r, err := store.GetReservation(ctx, fmt.Sprintf("r-%d", i)); err != nil || r.Status != StatusReleased {
				t.Errorf("r-%d = %+v, %v", i, r, err)
			}
		}
		if n := stockOf(t, store, "p-frother"); n != 35 {
			t.Errorf("frother stock = %d, want 35", n)
		}
	})
}
