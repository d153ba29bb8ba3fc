package payment

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jmoiron/sqlx"
)

// Provider is the card provider, as the service needs it. Every call is
// idempotent on the order id (the provider's idempotency key): Charge for
// an order already charged returns that charge and charges nothing; Refund
// for an order already refunded returns that refund and refunds nothing;
// Lookup only reads.
//
// An error other than ErrInvalidToken, ErrNoCharge and ErrNotRefundable (a
// timeout, a network failure) means the provider's answer is unknown.
type Provider interface {
	Charge(ctx context.Context, req ProviderCharge) (Charge, error)
	Lookup(ctx context.Context, orderID string) (Charge, error)
	Refund(ctx context.Context, req ProviderRefund) (RefundReceipt, error)
}

// ProviderCharge asks the provider to charge a card for an order.
type ProviderCharge struct {
	OrderID     string
	AmountCents int64
	Currency    string
	CardToken   string
}

// Charge is the provider's record of an order's charge: a definite outcome.
type Charge struct {
	ID      string
	Outcome string // OutcomeApproved, OutcomeDeclined or OutcomeFailed
	Reason  string // why it was not approved
}

// ProviderRefund asks the provider to pay an order's approved charge back
// in full.
type ProviderRefund struct {
	OrderID     string
	ChargeID    string
	AmountCents int64
	Currency    string
}

// RefundReceipt is the provider's record of an order's refund: the money
// went back.
type RefundReceipt struct {
	ID string
}

// Outcomes of a charge.
const (
	OutcomeApproved = "approved"
	OutcomeDeclined = "declined"
	OutcomeFailed   = "failed" // the provider could not process it; nothing was charged
)

// Definite provider answers that are not a charge or a refund.
var (
	// ErrInvalidToken: the provider knows no such card token; nothing was
	// charged.
	ErrInvalidToken = errors.New("provider: unknown card token")
	// ErrNoCharge: the provider has no charge for the order (Lookup), or
	// none with that id (Refund).
	ErrNoCharge = errors.New("provider: no charge for this order")
	// ErrNotRefundable: the order's charge was not approved, or the refund
	// asked is not its whole amount; nothing was refunded.
	ErrNotRefundable = errors.New("provider: the charge cannot be refunded")
)

// Test cards of the simulated provider.
const (
	CardVisa     = "tok_visa"     // approved
	CardDeclined = "tok_declined" // declined
	CardError    = "tok_error"    // the provider fails to process it
	// CardTimeout is charged (approved) but the answer to the first Charge
	// never comes: the caller times out, and learns the outcome from Lookup
	// or from Charge asked again. The first Refund's answer is lost too.
	CardTimeout = "tok_timeout"
)

// Simulator is a card provider with the test cards. Like a real provider
// it is idempotent on a key, the order id, and keeps its records itself:
// in its own tables of the payment database (migrations/002_simulator.sql),
// so a restarted process answers a repeated charge or refund with the
// recorded one and never moves money twice, even for a charge whose first
// answer was lost.
type Simulator struct {
	// Latency delays every answer (within the caller's deadline).
	Latency time.Duration

	db  *sqlx.DB
	now func() time.Time
}

// NewSimulator returns a provider simulator keeping its records in db
// (migrated with Migrations) and answering after latency.
func NewSimulator(db *sqlx.DB, latency time.Duration) *Simulator {
	return &Simulator{Latency: latency, db: db, now: time.Now}
}

// The simulator's SQL. An insert that finds the key taken does nothing, and
// the select that follows returns whichever record holds the key: of two
// concurrent requests (or two processes) exactly one records.
const (
	simChargeColumns   = `order_id, charge_id, outcome, reason, amount_cents, currency, card_token, created_at`
	simInsertChargeSQL = `INSERT INTO simulator_charges (` + simChargeColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`
	simGetChargeSQL    = `SELECT ` + simChargeColumns + ` FROM simulator_charges WHERE order_id = ?`
	simRefundColumns   = `order_id, refund_id, charge_id, amount_cents, currency, created_at`
	simInsertRefundSQL = `INSERT INTO simulator_refunds (` + simRefundColumns + `) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (order_id) DO NOTHING`
	simGetRefundSQL    = `SELECT ` + simRefundColumns + ` FROM simulator_refunds WHERE order_id = ?`
)

type simCharge struct {
	OrderID     string    `db:"order_id"`
	ChargeID    string    `db:"charge_id"`
	Outcome     string    `db:"outcome"`
	Reason      string    `db:"reason"`
	AmountCents int64     `db:"amount_cents"`
	Currency    string    `db:"currency"`
	CardToken   string    `db:"card_token"`
	CreatedAt   time.Time `db:"created_at"`
}

func (c simCharge) charge() Charge {
	return Charge{ID: c.ChargeID, Outcome: c.Outcome, Reason: c.Reason}
}

type simRefund struct {
	OrderID     string    `db:"order_id"`
	RefundID    string    `db:"refund_id"`
	ChargeID    string    `db:"charge_id"`
	AmountCents int64     `db:"amount_cents"`
	Currency    string    `db:"currency"`
	CreatedAt   time.Time `db:"created_at"`
}

// Charge charges req's card once per order.
func (s *Simulator) Charge(ctx context.Context, req ProviderCharge) (Charge, error) {
	c, first, err := s.charge(ctx, req)
	if err != nil {
		return Charge{}, err
	}
	if first && req.CardToken == CardTimeout {
		<-ctx.Done() // charged, but the answer is lost
		return Charge{}, ctx.Err()
	}
	return c.charge(), s.wait(ctx)
}

// charge records req's outcome unless the order has one; it returns the
// order's record and whether this call made it.
func (s *Simulator) charge(ctx context.Context, req ProviderCharge) (simCharge, bool, error) {
	c := simCharge{OrderID: req.OrderID, ChargeID: "ch_" + uuid.Must(uuid.NewV7()).String(), AmountCents: req.AmountCents,
		Currency: req.Currency, CardToken: req.CardToken, CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	switch req.CardToken {
	case CardVisa, CardTimeout:
		c.Outcome = OutcomeApproved
	case CardDeclined:
		c.Outcome, c.Reason = OutcomeDeclined, ReasonDeclined
	case CardError:
		c.Outcome, c.Reason = OutcomeFailed, ReasonProviderErr
	default:
		if got, err := s.getCharge(ctx, req.OrderID); err == nil {
			return got, false, nil // the key's record wins, as below
		}
		return simCharge{}, false, ErrInvalidToken
	}
	r, err := s.db.ExecContext(ctx, s.db.Rebind(simInsertChargeSQL), c.OrderID, c.ChargeID, c.Outcome, c.Reason,
		c.AmountCents, c.Currency, c.CardToken, c.CreatedAt)
	if err != nil {
		return simCharge{}, false, fmt.Errorf("provider: record charge: %w", err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return simCharge{}, false, fmt.Errorf("provider: record charge: %w", err)
	} else if n == 1 {
		return c, true, nil
	}
	got, err := s.getCharge(ctx, req.OrderID)
	return got, false, err
}

func (s *Simulator) getCharge(ctx context.Context, orderID string) (simCharge, error) {
	var c simCharge
	err := s.db.GetContext(ctx, &c, s.db.Rebind(simGetChargeSQL), orderID)
	if errors.Is(err, sql.ErrNoRows) {
		return simCharge{}, ErrNoCharge
	}
	if err != nil {
		return simCharge{}, fmt.Errorf("provider: read charge: %w", err)
	}
	return c, nil
}

// Lookup returns the charge of orderID.
func (s *Simulator) Lookup(ctx context.Context, orderID string) (Charge, error) {
	c, err := s.getCharge(ctx, orderID)
	if err != nil && !errors.Is(err, ErrNoCharge) {
		return Charge{}, err
	}
	if wErr := s.wait(ctx); wErr != nil {
		return Charge{}, wErr
	}
	return c.charge(), err
}

// Refund pays the order's approved charge back in full, once per order.
// A charge made with CardTimeout loses the answer to its first refund too.
func (s *Simulator) Refund(ctx context.Context, req ProviderRefund) (RefundReceipt, error) {
	c, err := s.getCharge(ctx, req.OrderID)
	switch {
	case err != nil:
		return RefundReceipt{}, err
	case c.ChargeID != req.ChargeID:
		return RefundReceipt{}, ErrNoCharge
	case c.Outcome != OutcomeApproved || c.AmountCents != req.AmountCents || c.Currency != req.Currency:
		return RefundReceipt{}, ErrNotRefundable
	}
	r := simRefund{OrderID: c.OrderID, RefundID: "re_" + uuid.Must(uuid.NewV7()).String(), ChargeID: c.ChargeID,
		AmountCents: c.AmountCents, Currency: c.Currency, CreatedAt: s.now().UTC().Truncate(time.Microsecond)}
	res, err := s.db.ExecContext(ctx, s.db.Rebind(simInsertRefundSQL), r.OrderID, r.RefundID, r.ChargeID, r.AmountCents, r.Currency, r.CreatedAt)
	if err != nil {
		return RefundReceipt{}, fmt.Errorf("provider: record refund: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return RefundReceipt{}, fmt.Errorf("provider: record refund: %w", err)
	}
	if n == 0 {
		if err := s.db.GetContext(ctx, &r, s.db.Rebind(simGetRefundSQL), req.OrderID); err != nil {
			return RefundReceipt{}, fmt.Errorf("provider: read refund: %w", err)
		}
	} else if c.CardToken == CardTimeout {
		<-ctx.Done() // refunded, but the answer is lost
		return RefundReceipt{}, ctx.Err()
	}
	return RefundReceipt{ID: r.RefundID}, s.wait(ctx)
}

func (s *Simulator) wait(ctx context.Context) error {
	if s.Latency <= 0 {
		return ctx.Err()
	}
	select {
	case <-time.After(s.Latency):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
