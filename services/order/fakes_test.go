package order

import (
	"context"
	"sync"

	"github.com/meshop/meshop/services/kit/errs"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	productclient "github.com/meshop/meshop/services/product/client"
	userclient "github.com/meshop/meshop/services/user/client"
)

// fakeUsers answers from a map, or fails with err.
type fakeUsers struct {
	profiles map[string]Profile
	err      error
}

func (f fakeUsers) Get(_ context.Context, id string) (Profile, error) {
	if f.err != nil {
		return Profile{}, f.err
	}
	p, ok := f.profiles[id]
	if !ok {
		return Profile{}, errs.New(errs.NotFound, userclient.ReasonUserNotFound, "no user")
	}
	return p, nil
}

var unreachable = errs.New(errs.Unavailable, "upstream_unavailable", "could not be reached").
	WithDetails(map[string]any{"service": "fake"})

// fakeInventory keeps stock in memory, idempotent on order id like product.
type fakeInventory struct {
	mu       sync.Mutex
	stock    map[string]int
	prices   map[string]int64
	reserved map[string][]ItemRequest // order → lines
	state    map[string]string        // order → RESERVED, COMMITTED, RELEASED
	down     bool
	lost     bool // Commit answers that the reservation is gone
}

func newFakeInventory() *fakeInventory {
	return &fakeInventory{
		stock:    map[string]int{"p1": 10, "p2": 1, "p-eur": 5},
		prices:   map[string]int64{"p1": 350, "p2": 1200, "p-eur": 900},
		reserved: map[string][]ItemRequest{}, state: map[string]string{},
	}
}

// currency is a product's: p-eur is priced in euros, the rest in dollars.
func (f *fakeInventory) currency(productID string) string {
	if productID == "p-eur" {
		return "EUR"
	}
	return "USD"
}

func (f *fakeInventory) setDown(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *fakeInventory) Reserve(_ context.Context, orderID string, lines []ItemRequest) (Reservation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return Reservation{}, unreachable
	}
	switch f.state[orderID] {
	case productclient.StatusReleased:
		return Reservation{}, errs.New(errs.Conflict, productclient.ReasonReservationReleased, "released")
	case "":
		for _, l := range lines {
			if _, ok := f.stock[l.ProductID]; !ok {
				return Reservation{}, errs.New(errs.Validation, productclient.ReasonUnknownProduct, "no such product").
					WithDetails(map[string]any{"product_id": l.ProductID})
			}
			if f.stock[l.ProductID] < l.Quantity {
				return Reservation{}, errs.New(errs.Conflict, productclient.ReasonOutOfStock, "not enough").
					WithDetails(map[string]any{"product_id": l.ProductID, "available": f.stock[l.ProductID]})
			}
		}
		for _, l := range lines {
			f.stock[l.ProductID] -= l.Quantity
		}
		f.reserved[orderID], f.state[orderID] = lines, productclient.StatusReserved
	}
	r := Reservation{OrderID: orderID, Status: productclient.StatusReserved}
	for _, l := range f.reserved[orderID] {
		r.Items = append(r.Items, ReservationItem{ProductID: l.ProductID, Quantity: l.Quantity, UnitPriceCents: f.prices[l.ProductID], Currency: f.currency(l.ProductID)})
	}
	return r, nil
}

func (f *fakeInventory) Commit(_ context.Context, orderID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return unreachable
	}
	if f.lost {
		return errs.New(errs.Conflict, productclient.ReasonReservationReleased, "the reservation was released")
	}
	f.state[orderID] = productclient.StatusCommitted
	return nil
}

func (f *fakeInventory) Release(_ context.Context, orderID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return unreachable
	}
	if f.state[orderID] == productclient.StatusReserved {
		for _, l := range f.reserved[orderID] {
			f.stock[l.ProductID] += l.Quantity
		}
	}
	f.state[orderID] = productclient.StatusReleased
	return nil
}

func (f *fakeInventory) stockOf(id string) int { f.mu.Lock(); defer f.mu.Unlock(); return f.stock[id] }

// fakePayments charges by test card, idempotent on order id like payment.
type fakePayments struct {
	mu       sync.Mutex
	payments map[string]Payment
	charges  int
	down     bool
	// fail, when set, is every Charge's answer (a mesh's or network's).
	fail error
	// refunds counts refunds by order; refundDown makes Refund unreachable.
	refunds    map[string]int
	refundDown bool
}

func (f *fakePayments) ByOrder(_ context.Context, orderID string) (Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return Payment{}, unreachable
	}
	if p, ok := f.payments[orderID]; ok {
		return p, nil
	}
	return Payment{}, errs.New(errs.NotFound, paymentclient.ReasonPaymentNotFound, "no payment")
}

func (f *fakePayments) Refund(_ context.Context, orderID string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.refundDown {
		return unreachable
	}
	p, ok := f.payments[orderID]
	switch {
	case !ok:
		return errs.New(errs.NotFound, paymentclient.ReasonPaymentNotFound, "no payment")
	case p.Status != paymentclient.StatusSucceeded:
		return errs.New(errs.Conflict, paymentclient.ReasonNotRefundable, "nothing was charged")
	}
	if f.refunds == nil {
		f.refunds = map[string]int{}
	}
	if f.refunds[orderID] == 0 { // idempotent on the order id
		f.refunds[orderID] = 1
	}
	return nil
}

func newFakePayments() *fakePayments { return &fakePayments{payments: map[string]Payment{}} }

func (f *fakePayments) setDown(down bool) { f.mu.Lock(); f.down = down; f.mu.Unlock() }

func (f *fakePayments) Charge(_ context.Context, c Charge) (Payment, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.down {
		return Payment{}, unreachable
	}
	if f.fail != nil {
		return Payment{}, f.fail
	}
	if p, ok := f.payments[c.OrderID]; ok {
		return p, nil
	}
	status := map[string]string{"tok_visa": paymentclient.StatusSucceeded, "tok_declined": paymentclient.StatusDeclined,
		"tok_error": paymentclient.StatusFailed}[c.CardToken]
	if status == "" {
		return Payment{}, errs.New(errs.Validation, paymentclient.ReasonInvalidCardToken, "unknown card token")
	}
	f.charges++
	p := Payment{ID: "pay-" + c.OrderID, Status: status}
	f.payments[c.OrderID] = p
	return p, nil
}

func (f *fakePayments) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.charges }
