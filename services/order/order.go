// Package order owns orders: what a user bought, at what price, and where
// the order stands (PENDING → CONFIRMED or CANCELLED). An order is returned
// with its user's profile, fetched from the user service through the mesh;
// when user cannot answer in time the order still comes back, with
// "user": null and "degraded": ["user"]. Checkout reserves stock at product
// and charges at payment (checkout.go). Every call to another service is
// gRPC, through the provider's client package:
//
//	HTTP ──▶ transport_http.go ──▶ endpoints.go ──▶ service.go ──┬──▶ store.go ──▶ DB
//	                                                             ├──▶ users.go ───────▶ userclient ─────▶ mesh ──▶ user
//	                                                             └──▶ upstreams.go ──┬▶ productclient ──▶ mesh ──▶ product
//	                                                                                 └▶ paymentclient ──▶ mesh ──▶ payment
package order

import (
	"embed"
	"time"

	"github.com/meshop/meshop/services/kit/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the order database's schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("order", migrations, "migrations")
}

// Statuses.
const (
	StatusPending   = "PENDING"
	StatusConfirmed = "CONFIRMED"
	StatusCancelled = "CANCELLED"
)

// Order is an order as clients see it.
type Order struct {
	ID           string    `json:"id" db:"id"`
	UserID       string    `json:"user_id" db:"user_id"`
	Status       string    `json:"status" db:"status"`
	Items        []Item    `json:"items"`
	TotalCents   int64     `json:"total_cents" db:"total_cents"`
	Currency     string    `json:"currency" db:"currency"`
	PaymentID    *string   `json:"payment_id" db:"payment_id"`
	CancelReason *string   `json:"cancel_reason" db:"cancel_reason"`
	CreatedAt    time.Time `json:"created_at" db:"created_at"`
	// User is the owner's profile, or nil when it could not be fetched.
	User *Profile `json:"user"`
	// Degraded lists the dependencies that could not be reached.
	Degraded []string `json:"degraded"`

	// CardToken is what checkout charges; Step is how far checkout got.
	CardToken string `json:"-" db:"card_token"`
	Step      string `json:"-" db:"step"`
	// Attempts counts the recoverer's runs that could not finish it.
	Attempts int `json:"-" db:"attempts"`
	// UpdatedAt is its last change (the reconciler's cursor).
	UpdatedAt time.Time `json:"-" db:"updated_at"`
	// Refunded is set on an order cancelled after its charge succeeded,
	// once payment refunded it (the order.cancelled event says so).
	Refunded bool `json:"refunded" db:"-"`
}

// Checkout steps, recorded so a restarted instance resumes where it was.
const (
	StepCreated  = "created"  // PENDING, nothing reserved yet
	StepReserved = "reserved" // stock reserved, lines priced
	StepCharging = "charging" // payment requested: never cancel without its outcome
	// StepRefunding: charged, but the stock could not be kept: the
	// payment is refunded before the order is cancelled.
	StepRefunding = "refunding"
	StepDone      = "done" // CONFIRMED or CANCELLED
)

// Cancel reasons.
const (
	ReasonPaymentDeclined = "payment_declined"
	ReasonPaymentFailed   = "payment_failed"
	ReasonTimeout         = "checkout_timeout"
	// ReasonMixedCurrencies: the cart's products are priced in more than
	// one currency (422; the stock is released).
	ReasonMixedCurrencies = "mixed_currencies"
	// ReasonReservationLost: the charge succeeded but product no longer
	// held the reservation to commit; the payment was refunded (409).
	ReasonReservationLost = "reservation_lost"
)

// Item is one line of an order.
type Item struct {
	ProductID      string `json:"product_id" db:"product_id"`
	Quantity       int    `json:"quantity" db:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents" db:"unit_price_cents"`
}

// Profile is the user service's view of the order's owner.
type Profile struct {
	ID        string    `json:"id"`
	Email     string    `json:"email"`
	Name      string    `json:"name"`
	Role      string    `json:"role"`
	CreatedAt time.Time `json:"created_at"`
}

// CreateRequest is the body of POST /orders.
type CreateRequest struct {
	Items   []ItemRequest `json:"items"`
	Payment PaymentInfo   `json:"payment"`
}

// ItemRequest is one requested line.
type ItemRequest struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

// PaymentInfo says how the order is paid.
type PaymentInfo struct {
	CardToken string `json:"card_token"`
}
