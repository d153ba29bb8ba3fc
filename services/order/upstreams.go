package order

import (
	"context"
	"net/http"
	"net/url"
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
	OrderID string            `json:"order_id"`
	Status  string            `json:"status"`
	Items   []ReservationItem `json:"items"`
}

// ReservationItem is one reserved, priced line.
type ReservationItem struct {
	ProductID      string `json:"product_id"`
	Quantity       int    `json:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents"`
	Currency       string `json:"currency"`
}

// Payments charges orders at the payment service, idempotently on order id.
type Payments interface {
	Charge(ctx context.Context, c Charge) (Payment, error)
}

// Charge is a payment request.
type Charge struct {
	OrderID     string `json:"order_id"`
	UserID      string `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	CardToken   string `json:"card_token"`
}

// Payment is the payment service's answer.
type Payment struct {
	ID     string `json:"id"`
	Status string `json:"status"` // SUCCEEDED, DECLINED, FAILED
}

// MeshInventory is Inventory over the mesh (product's /internal/reservations).
type MeshInventory struct{ Mesh Caller }

// Reserve implements Inventory.
func (m MeshInventory) Reserve(ctx context.Context, orderID string, lines []ItemRequest) (Reservation, error) {
	var r Reservation
	body := map[string]any{"order_id": orderID, "items": lines}
	err := m.Mesh.Call(ctx, "product", http.MethodPost, "/internal/reservations", nil, body, &r)
	return r, err
}

// Commit implements Inventory.
func (m MeshInventory) Commit(ctx context.Context, orderID string) error {
	return m.Mesh.Call(ctx, "product", http.MethodPost, "/internal/reservations/"+url.PathEscape(orderID)+"/commit", nil, nil, nil)
}

// Release implements Inventory.
func (m MeshInventory) Release(ctx context.Context, orderID string) error {
	return m.Mesh.Call(ctx, "product", http.MethodPost, "/internal/reservations/"+url.PathEscape(orderID)+"/release", nil, nil, nil)
}

// MeshPayments is Payments over the mesh (payment's /internal/payments).
type MeshPayments struct{ Mesh Caller }

// Charge implements Payments.
func (m MeshPayments) Charge(ctx context.Context, c Charge) (Payment, error) {
	var p Payment
	err := m.Mesh.Call(ctx, "payment", http.MethodPost, "/internal/payments", nil, c, &p)
	return p, err
}
