package order

import (
	"context"

	"github.com/meshop/meshop/services/kit/errs"
	paymentclient "github.com/meshop/meshop/services/payment/client"
	productclient "github.com/meshop/meshop/services/product/client"
)

// Inventory reserves stock for an order at the product service. Every call
// is idempotent on the order id, so checkout can repeat any of them.
type Inventory interface {
	// Reserve reserves all lines or none and returns them priced.
	Reserve(ctx context.Context, orderID string, lines []ItemRequest) (Reservation, error)
	Commit(ctx context.Context, orderID string) error
	Release(ctx context.Context, orderID string) error
}

// Reservation is what the product service reserved.
type Reservation struct {
	OrderID string
	Status  string
	Items   []ReservationItem
}

// ReservationItem is one reserved, priced line.
type ReservationItem struct {
	ProductID      string
	Quantity       int
	UnitPriceCents int64
	Currency       string
}

// Payments charges orders at the payment service, idempotently on order id.
type Payments interface {
	Charge(ctx context.Context, c Charge) (Payment, error)
	// Refund pays the order's charge back, idempotent on the order id;
	// payment refuses (PAYMENT_NOT_FOUND, NOT_REFUNDABLE) when nothing
	// was charged.
	Refund(ctx context.Context, orderID string) error
	// ByOrder is the order's payment (payment refuses PAYMENT_NOT_FOUND
	// when it has none).
	ByOrder(ctx context.Context, orderID string) (Payment, error)
}

// Charge is a payment request.
type Charge struct {
	OrderID     string
	UserID      string
	AmountCents int64
	Currency    string
	CardToken   string
}

// Payment is the payment service's answer.
type Payment struct {
	ID     string
	Status string // paymentclient.StatusSucceeded, StatusDeclined or StatusFailed
}

// NewInventory is Inventory over the product service's gRPC API (package
// productclient, on meshclient.Client.Conn("product")).
func NewInventory(c *productclient.Client) Inventory { return inventory{c} }

type inventory struct{ product *productclient.Client }

func (i inventory) Reserve(ctx context.Context, orderID string, lines []ItemRequest) (Reservation, error) {
	items := make([]productclient.Item, len(lines))
	for n, l := range lines {
		items[n] = productclient.Item{ProductID: l.ProductID, Quantity: l.Quantity}
	}
	r, err := i.product.Reserve(ctx, orderID, items)
	if err != nil {
		return Reservation{}, named("product", err)
	}
	out := Reservation{OrderID: r.OrderID, Status: r.Status, Items: make([]ReservationItem, len(r.Items))}
	for n, it := range r.Items {
		out.Items[n] = ReservationItem{ProductID: it.ProductID, Quantity: it.Quantity, UnitPriceCents: it.UnitPriceCents, Currency: it.Currency}
	}
	return out, nil
}

func (i inventory) Commit(ctx context.Context, orderID string) error {
	_, err := i.product.Commit(ctx, orderID)
	return named("product", err)
}

func (i inventory) Release(ctx context.Context, orderID string) error {
	_, err := i.product.Release(ctx, orderID)
	return named("product", err)
}

// NewPayments is Payments over the payment service's gRPC API (package
// paymentclient, on meshclient.Client.Conn("payment")).
func NewPayments(c *paymentclient.Client) Payments { return payments{c} }

type payments struct{ payment *paymentclient.Client }

func (p payments) Charge(ctx context.Context, c Charge) (Payment, error) {
	paid, err := p.payment.Charge(ctx, paymentclient.Charge{OrderID: c.OrderID, UserID: c.UserID,
		AmountCents: c.AmountCents, Currency: c.Currency, CardToken: c.CardToken})
	if err != nil {
		return Payment{}, named("payment", err)
	}
	return Payment{ID: paid.ID, Status: paid.Status}, nil
}

func (p payments) ByOrder(ctx context.Context, orderID string) (Payment, error) {
	paid, err := p.payment.GetPaymentByOrder(ctx, orderID)
	if err != nil {
		return Payment{}, named("payment", err)
	}
	return Payment{ID: paid.ID, Status: paid.Status}, nil
}

func (p payments) Refund(ctx context.Context, orderID string) error {
	_, err := p.payment.Refund(ctx, orderID)
	return named("payment", err)
}

// named adds the dependency's name to an Unavailable error (details
// "service", which checkout's 503 checkout_pending reports as
// "dependency"); refusals and nil pass as they are.
func named(service string, err error) error {
	if !errs.Is(err, errs.Unavailable) || errs.As(err).Details["service"] != nil {
		return err
	}
	return errs.As(err).WithDetails(map[string]any{"service": service})
}
