// Package payment charges orders through a card provider, exactly once per
// order, and keeps the result:
//
//	gRPC Charge ──────────────▶ insert PENDING (order_id unique: the one charge's claim)
//	      │                         │ lost the insert: the first payment's outcome
//	      ▼                         ▼
//	provider.Charge (own timeout) ──▶ SUCCEEDED / DECLINED / FAILED + event, one tx
//	      │ no answer in time
//	      ▼
//	   UNKNOWN ──(next Charge of the order, or the Resolver)──▶ provider.Lookup(order_id)
//	                                                            ──▶ the provider's own answer
//
// An outcome is never guessed: only the provider's answer settles a payment,
// and the provider is idempotent on the order id, so asking again never
// charges twice. Refunds take the same path (gRPC Refund ──▶ insert a
// PENDING refund, order_id unique ──▶ provider.Refund ──▶ SUCCEEDED +
// payment.refunded, one tx; no answer: UNKNOWN, asked again later), and
// the simulated provider keeps its records in this database, so a restart
// changes no outcome.
//
//	HTTP (GET /payments/{id}) ──────────▶ transport_http.go ──┐
//	gRPC (meshop.payment.v1.Payments) ──▶ transport_grpc.go ──┴▶ endpoints.go ──▶ service.go ──┬──▶ store.go ──▶ DB (+ outbox)
//	                                                             resolver.go ──────────────────┘└──▶ provider.go ──▶ card provider
//
// Charging and refunding are the internal gRPC API (proto/meshop/payment/v1,
// called through package client); the edge never routes them.
package payment

import (
	"embed"
	"time"

	"github.com/meshop/meshop/services/kit/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the payment database's schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("payment", migrations, "migrations")
}

// Name is the service's name, the source of its events.
const Name = "payment"

// Statuses. SUCCEEDED, DECLINED and FAILED are final. PENDING is a charge
// in flight; UNKNOWN is a charge whose answer never came: neither is a
// success or a failure until the provider says which.
const (
	StatusPending   = "PENDING"
	StatusUnknown   = "UNKNOWN"
	StatusSucceeded = "SUCCEEDED"
	StatusDeclined  = "DECLINED"
	StatusFailed    = "FAILED"
)

// Reasons a payment did not succeed: data stored with the payment and sent
// as its Reason, not error reasons. (A charge the provider fails with
// ReasonInvalidToken is also refused, with the error reason
// client.ReasonInvalidCardToken.)
const (
	ReasonDeclined     = "card_declined"
	ReasonProviderErr  = "provider_error"
	ReasonInvalidToken = "invalid_card_token"
)

// Payment is one order's payment.
type Payment struct {
	ID          string    `json:"id" db:"id"`
	OrderID     string    `json:"order_id" db:"order_id"`
	UserID      string    `json:"-" db:"user_id"`
	Status      string    `json:"status" db:"status"`
	AmountCents int64     `json:"amount_cents" db:"amount_cents"`
	Currency    string    `json:"currency" db:"currency"`
	Reason      string    `json:"reason,omitempty" db:"reason"` // why it did not succeed
	CreatedAt   time.Time `json:"created_at" db:"created_at"`
	// CardToken is kept to ask the provider again, idempotently, when the
	// first charge's answer was lost.
	CardToken string    `json:"-" db:"card_token"`
	ChargeID  string    `json:"-" db:"charge_id"` // the provider's id of the charge
	UpdatedAt time.Time `json:"-" db:"updated_at"`
}

// Final reports whether p's outcome is known.
func (p Payment) Final() bool {
	return p.Status == StatusSucceeded || p.Status == StatusDeclined || p.Status == StatusFailed
}

// ChargeRequest is what Charge takes (the gRPC ChargeRequest).
type ChargeRequest struct {
	OrderID     string `json:"order_id"`
	UserID      string `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	CardToken   string `json:"card_token"`
}

// Refund statuses. SUCCEEDED is final: the money went back. PENDING is a
// refund in flight; UNKNOWN is a refund whose answer never came.
const (
	RefundPending   = "PENDING"
	RefundUnknown   = "UNKNOWN"
	RefundSucceeded = "SUCCEEDED"
)

// Refund pays an order's SUCCEEDED payment back, in full, once. The
// payment keeps its status: a refund is a record of its own.
type Refund struct {
	ID          string    `json:"id" db:"id"`
	PaymentID   string    `json:"payment_id" db:"payment_id"`
	OrderID     string    `json:"order_id" db:"order_id"`
	UserID      string    `json:"-" db:"user_id"`
	Status      string    `json:"status" db:"status"`
	AmountCents int64     `json:"amount_cents" db:"amount_cents"`
	Currency    string    `json:"currency" db:"currency"`
	CreatedAt   time.Time `json:"created_at" db:"created_at"`
	// ProviderRefundID is the provider's id of the refund.
	ProviderRefundID string    `json:"-" db:"provider_refund_id"`
	UpdatedAt        time.Time `json:"-" db:"updated_at"`
}

// RefundEvent is the data of payment.refunded.
type RefundEvent struct {
	RefundID    string `json:"refund_id"`
	PaymentID   string `json:"payment_id"`
	OrderID     string `json:"order_id"`
	UserID      string `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
}

// Event is the data of payment.succeeded and payment.failed.
type Event struct {
	PaymentID   string `json:"payment_id"`
	OrderID     string `json:"order_id"`
	UserID      string `json:"user_id"`
	AmountCents int64  `json:"amount_cents"`
	Currency    string `json:"currency"`
	Status      string `json:"status"`
	Reason      string `json:"reason"`
}
