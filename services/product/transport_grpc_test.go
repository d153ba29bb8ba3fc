package product

import (
	"context"
	"log/slog"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/product/client"
	productv1 "github.com/meshop/meshop/services/product/proto/meshop/product/v1"
)

// serveGRPC serves NewGRPCServer over store in process and returns a
// connection to it.
func serveGRPC(t *testing.T, store Store) *grpc.ClientConn {
	t.Helper()
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "product"))
	conn, _ := kittest.ServeGRPC(t, func(s grpc.ServiceRegistrar) { productv1.RegisterReservationsServer(s, NewGRPCServer(e)) })
	return conn
}

func TestGRPCReservations(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t, sqliteURL(t))
	reservations := client.New(serveGRPC(t, store))

	items := []client.Item{{ProductID: "p-espresso", Quantity: 2}}
	r, err := reservations.Reserve(ctx, "o1", items)
	want := client.Reservation{OrderID: "o1", Status: client.StatusReserved,
		Items: []client.ReservedItem{{ProductID: "p-espresso", Quantity: 2, UnitPriceCents: 2400, Currency: "USD"}}}
	if diff := cmp.Diff(want, r); err != nil || diff != "" {
		t.Fatalf("Reserve: %v (-want +got):\n%s", err, diff)
	}
	if again, err := reservations.Reserve(ctx, "o1", items); err != nil || !cmp.Equal(again, want) {
		t.Errorf("Reserve again = %+v, %v; want the first reservation", again, err)
	}
	for i := range 2 { // idempotent
		if c, err := reservations.Commit(ctx, "o1"); err != nil || c.Status != client.StatusCommitted || c.OrderID != "o1" {
			t.Errorf("Commit %d = %+v, %v", i+1, c, err)
		}
	}
	if rel, err := reservations.Release(ctx, "o2"); err != nil || rel.Status != client.StatusReleased {
		t.Errorf("Release of an order that never reserved = %+v, %v", rel, err)
	}
	if n := stockOf(t, store, "p-espresso"); n != 98 {
		t.Errorf("espresso stock = %d, want 98", n)
	}
}

func TestGRPCRefusals(t *testing.T) {
	ctx := context.Background()
	store, _ := openStore(t, sqliteURL(t))
	reservations := client.New(serveGRPC(t, store))
	mug := []client.Item{{ProductID: "p-mug", Quantity: 1}}
	if _, err := reservations.Reserve(ctx, "done", mug); err != nil {
		t.Fatal(err)
	}
	if _, err := reservations.Commit(ctx, "done"); err != nil {
		t.Fatal(err)
	}
	if _, err := reservations.Release(ctx, "gone"); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name        string
		call        func() error
		wantKind    errs.Kind
		wantReason  string
		wantDetails map[string]any
	}{
		{"out of stock", func() error {
			_, err := reservations.Reserve(ctx, "o9", []client.Item{{ProductID: "p-mug", Quantity: 1}, {ProductID: "p-cupping-set", Quantity: 2}})
			return err
		}, errs.Conflict, client.ReasonOutOfStock, map[string]any{"product_id": "p-cupping-set", "requested": 2.0, "available": 1.0}},
		{"unknown product", func() error {
			_, err := reservations.Reserve(ctx, "o9", []client.Item{{ProductID: "p-mug", Quantity: 1}, {ProductID: "p-unicorn", Quantity: 1}})
			return err
		}, errs.Validation, client.ReasonUnknownProduct, map[string]any{"product_id": "p-unicorn"}},
		{"other items for the order", func() error {
			_, err := reservations.Reserve(ctx, "done", []client.Item{{ProductID: "p-mug", Quantity: 5}})
			return err
		}, errs.Conflict, client.ReasonIdempotencyMismatch, nil},
		{"reserve after release", func() error { _, err := reservations.Reserve(ctx, "gone", mug); return err },
			errs.Conflict, client.ReasonReservationReleased, nil},
		{"commit unknown", func() error { _, err := reservations.Commit(ctx, "nope"); return err },
			errs.NotFound, client.ReasonReservationNotFound, nil},
		{"commit released", func() error { _, err := reservations.Commit(ctx, "gone"); return err },
			errs.Conflict, client.ReasonReservationReleased, nil},
		{"release committed", func() error { _, err := reservations.Release(ctx, "done"); return err },
			errs.Conflict, client.ReasonReservationCommitted, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			e := errs.As(err)
			if e.Kind != tt.wantKind || errs.Reason(err) != tt.wantReason {
				t.Fatalf("err = %v, want %v %s", err, tt.wantKind, tt.wantReason)
			}
			for k, v := range tt.wantDetails {
				if e.Details[k] != v {
					t.Errorf("details[%s] = %v, want %v", k, e.Details[k], v)
				}
			}
		})
	}
	if n := stockOf(t, store, "p-mug"); n != 119 {
		t.Errorf("mug stock = %d, want 119 (one committed)", n)
	}
}

// countingStore counts the calls that write.
type countingStore struct {
	Store
	writes int
}

func (s *countingStore) Reserve(ctx context.Context, orderID string, items []ItemRequest) (Reservation, bool, error) {
	s.writes++
	return s.Store.Reserve(ctx, orderID, items)
}

func (s *countingStore) Commit(ctx context.Context, orderID string) (Reservation, error) {
	s.writes++
	return s.Store.Commit(ctx, orderID)
}

func (s *countingStore) Release(ctx context.Context, orderID string) (Reservation, error) {
	s.writes++
	return s.Store.Release(ctx, orderID)
}

func TestGRPCInvalidArgument(t *testing.T) {
	sql, _ := openStore(t, sqliteURL(t))
	store := &countingStore{Store: sql}
	raw := productv1.NewReservationsClient(serveGRPC(t, store))
	reserve := func(req *productv1.ReserveRequest) func(context.Context) error {
		return func(ctx context.Context) error { _, err := raw.Reserve(ctx, req); return err }
	}
	item := func(id string, q int32) []*productv1.Item { return []*productv1.Item{{ProductId: id, Quantity: q}} }
	tests := []struct {
		name       string
		call       func(context.Context) error
		wantReason string
	}{
		{"reserve without order id", reserve(&productv1.ReserveRequest{Items: item("p-mug", 1)}), client.ReasonInvalidReservation},
		{"reserve without items", reserve(&productv1.ReserveRequest{OrderId: "o1"}), client.ReasonInvalidReservation},
		{"reserve zero quantity", reserve(&productv1.ReserveRequest{OrderId: "o1", Items: item("p-mug", 0)}), client.ReasonInvalidReservation},
		{"reserve negative quantity", reserve(&productv1.ReserveRequest{OrderId: "o1", Items: item("p-mug", -3)}), client.ReasonInvalidReservation},
		{"reserve too many", reserve(&productv1.ReserveRequest{OrderId: "o1", Items: item("p-mug", 1_000_001)}), client.ReasonInvalidReservation},
		{"reserve without product id", reserve(&productv1.ReserveRequest{OrderId: "o1", Items: item("", 1)}), client.ReasonInvalidReservation},
		{"reserve a product id no product has", reserve(&productv1.ReserveRequest{OrderId: "o1", Items: item("no such/product", 1)}), client.ReasonUnknownProduct},
		{"commit without order id", func(ctx context.Context) error {
			_, err := raw.Commit(ctx, &productv1.CommitRequest{})
			return err
		}, client.ReasonInvalidOrderID},
		{"release without order id", func(ctx context.Context) error {
			_, err := raw.Release(ctx, &productv1.ReleaseRequest{})
			return err
		}, client.ReasonInvalidOrderID},
		{"release a bad order id", func(ctx context.Context) error {
			_, err := raw.Release(ctx, &productv1.ReleaseRequest{OrderId: "a b"})
			return err
		}, client.ReasonInvalidOrderID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, reason := kittest.ErrorInfo(tt.call(context.Background()))
			if code != codes.InvalidArgument || reason != tt.wantReason {
				t.Errorf("got %v %q, want InvalidArgument %q", code, reason, tt.wantReason)
			}
		})
	}
	if store.writes != 0 {
		t.Errorf("the store saw %d writes; want none", store.writes)
	}
	if n := stockOf(t, sql, "p-mug"); n != 120 {
		t.Errorf("mug stock = %d, want 120", n)
	}
}
