package order

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/services/kit/errs"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	productclient "github.com/meshop/meshop/services/product/client"
)

func TestUpstreamsOverGRPC(t *testing.T) {
	ctx := context.Background()
	inventory, payments := newFakeInventory(), newFakePayments()
	up := serveFakes(t, fakeUsers{}, inventory, payments)

	r, err := up.inventory.Reserve(ctx, "o1", []ItemRequest{{ProductID: "p1", Quantity: 2}})
	want := Reservation{OrderID: "o1", Status: productclient.StatusReserved, Items: []ReservationItem{{ProductID: "p1", Quantity: 2, UnitPriceCents: 350, Currency: "USD"}}}
	if diff := cmp.Diff(want, r); err != nil || diff != "" {
		t.Errorf("Reserve: %v (-want +got):\n%s", err, diff)
	}
	if err := up.inventory.Commit(ctx, "o1"); err != nil || inventory.state["o1"] != productclient.StatusCommitted {
		t.Errorf("Commit: %v, state %s", err, inventory.state["o1"])
	}
	if err := up.inventory.Release(ctx, "o2"); err != nil || inventory.state["o2"] != productclient.StatusReleased {
		t.Errorf("Release: %v, state %s", err, inventory.state["o2"])
	}
	p, err := up.payments.Charge(ctx, Charge{OrderID: "o1", UserID: "u1", AmountCents: 700, Currency: "USD", CardToken: "tok_declined"})
	if err != nil || p.Status != paymentclient.StatusDeclined || p.ID != "pay-o1" {
		t.Errorf("Charge = %+v, %v", p, err)
	}

	// Unreachable, each names its dependency (checkout_pending's details).
	up.stop()
	_, reserveErr := up.inventory.Reserve(ctx, "o3", []ItemRequest{{ProductID: "p1", Quantity: 1}})
	_, chargeErr := up.payments.Charge(ctx, Charge{OrderID: "o3", UserID: "u1", AmountCents: 350, Currency: "USD", CardToken: "tok_visa"})
	for _, tt := range []struct {
		name string
		err  error
		want string
	}{
		{"reserve", reserveErr, "product"},
		{"commit", up.inventory.Commit(ctx, "o3"), "product"},
		{"release", up.inventory.Release(ctx, "o3"), "product"},
		{"charge", chargeErr, "payment"},
	} {
		if e := errs.As(tt.err); e.Kind != errs.Unavailable || e.Details["service"] != tt.want {
			t.Errorf("%s while down: %v (details %v), want Unavailable naming %s", tt.name, tt.err, e.Details, tt.want)
		}
	}
}
