package payment

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/payment/client"
)

const (
	paymentColumns   = `id, order_id, user_id, status, amount_cents, currency, reason, card_token, charge_id, created_at, updated_at`
	insertPaymentSQL = `INSERT INTO payments (` + paymentColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	getPaymentSQL    = `SELECT ` + paymentColumns + ` FROM payments WHERE id = ?`
	getByOrderSQL    = `SELECT ` + paymentColumns + ` FROM payments WHERE order_id = ?`
	// settleSQL changes only an unsettled payment: of two settlers (the
	// request that charged, a retry, the resolver) exactly one wins, and
	// only the winner records the event.
	settleSQL = `UPDATE payments SET status = ?, reason = ?, charge_id = ?, updated_at = ?
		WHERE id = ? AND status IN ('PENDING', 'UNKNOWN')`
	markUnknownSQL = `UPDATE payments SET status = 'UNKNOWN', updated_at = ? WHERE id = ? AND status = 'PENDING'`
	unsettledSQL   = `SELECT ` + paymentColumns + ` FROM payments
		WHERE status = 'UNKNOWN' OR (status = 'PENDING' AND updated_at < ?) ORDER BY updated_at LIMIT ?`

	refundColumns    = `id, payment_id, order_id, user_id, status, amount_cents, currency, provider_refund_id, created_at, updated_at`
	insertRefundSQL  = `INSERT INTO refunds (` + refundColumns + `) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	getRefundSQL     = `SELECT ` + refundColumns + ` FROM refunds WHERE id = ?`
	getRefundByOrder = `SELECT ` + refundColumns + ` FROM refunds WHERE order_id = ?`
	settleRefundSQL  = `UPDATE refunds SET status = 'SUCCEEDED', provider_refund_id = ?, updated_at = ?
		WHERE id = ? AND status IN ('PENDING', 'UNKNOWN')`
	markRefundUnknown = `UPDATE refunds SET status = 'UNKNOWN', updated_at = ? WHERE id = ? AND status = 'PENDING'`
	unsettledRefunds  = `SELECT ` + refundColumns + ` FROM refunds
		WHERE status = 'UNKNOWN' OR (status = 'PENDING' AND updated_at < ?) ORDER BY updated_at LIMIT ?`
)

// SQLStore is the sqlx Store, on PostgreSQL or SQLite.
type SQLStore struct {
	db     *sqlx.DB
	outbox *events.Outbox
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations) that records its events through outbox.
func NewStore(db *sqlx.DB, outbox *events.Outbox) *SQLStore {
	return &SQLStore{db: db, outbox: outbox}
}

// codePaymentExists is the Conflict of an Insert for an order that has a
// payment: the service answers it with the first payment, so it never
// leaves the service.
const codePaymentExists = "payment_exists"

// Insert adds p; another payment for the same order is a Conflict with
// code payment_exists.
func (s *SQLStore) Insert(ctx context.Context, p Payment) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(insertPaymentSQL), p.ID, p.OrderID, p.UserID, p.Status, p.AmountCents,
		p.Currency, p.Reason, p.CardToken, p.ChargeID, p.CreatedAt, p.UpdatedAt)
	if sqldb.IsUniqueViolation(err) {
		return errs.Newf(errs.Conflict, codePaymentExists, "order %s already has a payment", p.OrderID)
	}
	if err != nil {
		return sqldb.Err("insert payment", err)
	}
	return nil
}

// Get returns payment id.
func (s *SQLStore) Get(ctx context.Context, id string) (Payment, error) {
	return s.get(ctx, getPaymentSQL, id)
}

// GetByOrder returns the payment of orderID.
func (s *SQLStore) GetByOrder(ctx context.Context, orderID string) (Payment, error) {
	return s.get(ctx, getByOrderSQL, orderID)
}

func (s *SQLStore) get(ctx context.Context, query, arg string) (Payment, error) {
	var p Payment
	err := s.db.GetContext(ctx, &p, s.db.Rebind(query), arg)
	if errors.Is(err, sql.ErrNoRows) {
		return Payment{}, errs.New(errs.NotFound, client.ReasonPaymentNotFound, "no such payment")
	}
	if err != nil {
		return Payment{}, sqldb.Err("get payment", err)
	}
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, nil
}

// Settle records p's outcome (Status, Reason, ChargeID, UpdatedAt) and ev
// in one transaction, if p is still unsettled. It reports whether it did;
// false means someone else settled it first, and nothing was written.
func (s *SQLStore) Settle(ctx context.Context, p Payment, ev events.Envelope) (bool, error) {
	return s.settleOnce(ctx, "settle payment", ev, settleSQL, p.Status, p.Reason, p.ChargeID, p.UpdatedAt, p.ID)
}

// settleOnce runs query (an UPDATE of a still unsettled row) and records
// ev with it, in one transaction; it reports whether the row was updated.
func (s *SQLStore) settleOnce(ctx context.Context, what string, ev events.Envelope, query string, args ...any) (bool, error) {
	settled := false
	err := s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		r, err := tx.ExecContext(ctx, tx.Rebind(query), args...)
		if err != nil {
			return sqldb.Err(what, err)
		}
		n, err := r.RowsAffected()
		if err != nil {
			return sqldb.Err(what, err)
		}
		if n == 0 {
			return nil
		}
		if err := tx.Record(ctx, ev); err != nil {
			return errs.Wrap(errs.Internal, "event", "record "+ev.Type, err)
		}
		settled = true
		return nil
	})
	if err != nil {
		return false, err
	}
	return settled, nil
}

// MarkUnknown moves a PENDING payment to UNKNOWN: its charge went out and
// no answer came back.
func (s *SQLStore) MarkUnknown(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(markUnknownSQL), at, id); err != nil {
		return sqldb.Err("mark payment unknown", err)
	}
	return nil
}

// Unsettled returns up to limit payments whose outcome is to be found:
// every UNKNOWN one, and PENDING ones not touched since staleBefore (their
// charging request died with its process).
func (s *SQLStore) Unsettled(ctx context.Context, staleBefore time.Time, limit int) ([]Payment, error) {
	var out []Payment
	if err := s.db.SelectContext(ctx, &out, s.db.Rebind(unsettledSQL), staleBefore, limit); err != nil {
		return nil, sqldb.Err("list unsettled payments", err)
	}
	return out, nil
}

// codeRefundExists is the Conflict of an InsertRefund for an order that
// has a refund: the service answers it with that refund.
const codeRefundExists = "refund_exists"

// InsertRefund adds r; another refund for the same order (or payment) is
// a Conflict with code refund_exists.
func (s *SQLStore) InsertRefund(ctx context.Context, r Refund) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(insertRefundSQL), r.ID, r.PaymentID, r.OrderID, r.UserID, r.Status,
		r.AmountCents, r.Currency, r.ProviderRefundID, r.CreatedAt, r.UpdatedAt)
	if sqldb.IsUniqueViolation(err) {
		return errs.Newf(errs.Conflict, codeRefundExists, "order %s already has a refund", r.OrderID)
	}
	if err != nil {
		return sqldb.Err("insert refund", err)
	}
	return nil
}

// GetRefund returns refund id.
func (s *SQLStore) GetRefund(ctx context.Context, id string) (Refund, error) {
	return s.getRefund(ctx, getRefundSQL, id)
}

// GetRefundByOrder returns the refund of orderID; NotFound when it has none.
func (s *SQLStore) GetRefundByOrder(ctx context.Context, orderID string) (Refund, error) {
	return s.getRefund(ctx, getRefundByOrder, orderID)
}

func (s *SQLStore) getRefund(ctx context.Context, query, arg string) (Refund, error) {
	var r Refund
	err := s.db.GetContext(ctx, &r, s.db.Rebind(query), arg)
	if errors.Is(err, sql.ErrNoRows) {
		return Refund{}, errs.New(errs.NotFound, codeNoRefund, "no such refund")
	}
	if err != nil {
		return Refund{}, sqldb.Err("get refund", err)
	}
	r.CreatedAt, r.UpdatedAt = r.CreatedAt.UTC(), r.UpdatedAt.UTC()
	return r, nil
}

// codeNoRefund is the NotFound of a refund lookup; the service never
// answers it as such.
const codeNoRefund = "refund_not_found"

// SettleRefund records r as SUCCEEDED (ProviderRefundID, UpdatedAt) and ev
// in one transaction, if r is still unsettled. It reports whether it did;
// false means someone else settled it first, and nothing was written.
func (s *SQLStore) SettleRefund(ctx context.Context, r Refund, ev events.Envelope) (bool, error) {
	return s.settleOnce(ctx, "settle refund", ev, settleRefundSQL, r.ProviderRefundID, r.UpdatedAt, r.ID)
}

// MarkRefundUnknown moves a PENDING refund to UNKNOWN: its request went
// out and no answer came back.
func (s *SQLStore) MarkRefundUnknown(ctx context.Context, id string, at time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(markRefundUnknown), at, id); err != nil {
		return sqldb.Err("mark refund unknown", err)
	}
	return nil
}

// UnsettledRefunds returns up to limit refunds whose outcome is to be
// found: every UNKNOWN one, and PENDING ones not touched since
// staleBefore.
func (s *SQLStore) UnsettledRefunds(ctx context.Context, staleBefore time.Time, limit int) ([]Refund, error) {
	var out []Refund
	if err := s.db.SelectContext(ctx, &out, s.db.Rebind(unsettledRefunds), staleBefore, limit); err != nil {
		return nil, sqldb.Err("list unsettled refunds", err)
	}
	return out, nil
}
