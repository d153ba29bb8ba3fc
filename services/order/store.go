package order

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/sqldb"
)

const (
	insertOrderSQL = `INSERT INTO orders (id, user_id, status, total_cents, currency, payment_id, cancel_reason,
		idempotency_key, request_hash, card_token, step, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertItemSQL = `INSERT INTO order_items (order_id, line, product_id, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?)`
	orderColumns  = `id, user_id, status, total_cents, currency, payment_id, cancel_reason, card_token, step, attempts, created_at, updated_at`
	getOrderSQL   = `SELECT ` + orderColumns + ` FROM orders WHERE id = ?`
	getByKeySQL   = `SELECT ` + orderColumns + `, request_hash FROM orders WHERE user_id = ? AND idempotency_key = ? AND created_at >= ?`
	// expireKeySQL frees a key whose order is older than the keys' TTL:
	// the order keeps it, renamed, so the key can name a new one.
	expireKeySQL  = `UPDATE orders SET idempotency_key = idempotency_key || '#expired-' || id WHERE user_id = ? AND idempotency_key = ? AND created_at < ?`
	listByUserSQL = `SELECT ` + orderColumns + ` FROM orders WHERE user_id = ? AND id > ? ORDER BY id LIMIT ?`
	// pendingSQL: PENDING orders left alone since before, not claimed,
	// not parked, and due for another attempt at now.
	pendingSQL = `SELECT ` + orderColumns + ` FROM orders WHERE status = 'PENDING' AND updated_at < ?
		AND parked_at IS NULL AND (claim_owner = '' OR claim_until < ?) AND (next_attempt_at IS NULL OR next_attempt_at <= ?)
		ORDER BY updated_at LIMIT ?`
	// finishedSQL: orders finished since a time, oldest first, for the
	// reconciler.
	finishedSQL = `SELECT ` + orderColumns + ` FROM orders WHERE status <> 'PENDING' AND updated_at > ? ORDER BY updated_at, id LIMIT ?`
	claimSQL    = `UPDATE orders SET claim_owner = ?, claim_until = ? WHERE id = ? AND status = 'PENDING' AND parked_at IS NULL
		AND (claim_owner = '' OR claim_owner = ? OR claim_until < ?)`
	releaseSQL   = `UPDATE orders SET claim_owner = '', claim_until = NULL WHERE id = ? AND claim_owner = ?`
	retrySQL     = `UPDATE orders SET attempts = attempts + 1, next_attempt_at = ? WHERE id = ? AND status = 'PENDING'`
	parkSQL      = `UPDATE orders SET parked_at = ? WHERE id = ? AND status = 'PENDING'`
	getItemsSQL  = `SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = ? ORDER BY line`
	priceItemSQL = `UPDATE order_items SET unit_price_cents = ? WHERE order_id = ? AND product_id = ?`
	// Every step transition is a compare-and-set on the expected step, by
	// the claim's holder.
	setPricedSQL = `UPDATE orders SET total_cents = ?, currency = ?, step = ?, updated_at = ?
		WHERE id = ? AND status = 'PENDING' AND step = ? AND claim_owner = ?`
	setStepSQL = `UPDATE orders SET step = ?, updated_at = ? WHERE id = ? AND status = 'PENDING' AND step = ? AND claim_owner = ?`
	finishSQL  = `UPDATE orders SET status = ?, payment_id = ?, cancel_reason = ?, step = 'done', updated_at = ?,
		claim_owner = '', claim_until = NULL WHERE id = ? AND status = 'PENDING' AND claim_owner = ?`
)

// SQLStore is the sqlx Store, on PostgreSQL or SQLite. State changes and
// the events reporting them are written in one transaction (outbox).
type SQLStore struct {
	db     *sqlx.DB
	outbox *events.Outbox
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations) that records its events through outbox.
func NewStore(db *sqlx.DB, outbox *events.Outbox) *SQLStore {
	return &SQLStore{db: db, outbox: outbox}
}

// Create stores a new order, its items and its order.created event: all or
// nothing. A key the user used for an order created at or after keysSince
// is a Conflict (idempotency_key_used); an older use of it is freed first.
func (s *SQLStore) Create(ctx context.Context, o Order, key, hash string, created events.Envelope, keysSince time.Time) error {
	return s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		if _, err := tx.ExecContext(ctx, s.db.Rebind(expireKeySQL), o.UserID, key, keysSince.UTC()); err != nil {
			return sqldb.Err("expire idempotency key", err)
		}
		_, err := tx.ExecContext(ctx, s.db.Rebind(insertOrderSQL), o.ID, o.UserID, o.Status, o.TotalCents, o.Currency,
			o.PaymentID, o.CancelReason, key, hash, o.CardToken, o.Step, o.CreatedAt, o.CreatedAt)
		if sqldb.IsUniqueViolation(err) {
			return errs.New(errs.Conflict, "idempotency_key_used", "this Idempotency-Key was already used")
		}
		if err != nil {
			return sqldb.Err("insert order", err)
		}
		for i, it := range o.Items {
			if _, err := tx.ExecContext(ctx, s.db.Rebind(insertItemSQL), o.ID, i, it.ProductID, it.Quantity, it.UnitPriceCents); err != nil {
				return sqldb.Err("insert order item", err)
			}
		}
		return tx.Record(ctx, created)
	})
}

// errClaimLost is a transition refused because the run no longer holds the
// order's claim, or the order is no longer at the step the run expected:
// another run moved it. The caller stops; the order is not lost.
var errClaimLost = errs.New(errs.Unavailable, "checkout_busy", "another run is finishing this checkout")

// changed turns "no row matched" into errClaimLost.
func changed(res sql.Result) error {
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		return errClaimLost
	}
	return nil
}

// Claim makes owner the holder of a PENDING, unparked order's claim until
// until, if nobody else holds it at now. It reports whether owner holds it.
func (s *SQLStore) Claim(ctx context.Context, id, owner string, until, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(claimSQL), owner, until.UTC(), id, owner, now.UTC())
	if err != nil {
		return false, sqldb.Err("claim order", err)
	}
	return changed(res) == nil, nil
}

// Release gives up owner's claim on an order.
func (s *SQLStore) Release(ctx context.Context, id, owner string) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(releaseSQL), id, owner); err != nil {
		return sqldb.Err("release order", err)
	}
	return nil
}

// Retry records a failed attempt of a PENDING order and when to try
// again.
func (s *SQLStore) Retry(ctx context.Context, id string, next time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(retrySQL), next.UTC(), id); err != nil {
		return sqldb.Err("record a checkout attempt", err)
	}
	return nil
}

// Park sets a PENDING order aside for an operator: recovery no longer
// picks it.
func (s *SQLStore) Park(ctx context.Context, id string, now time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(parkSQL), now.UTC(), id); err != nil {
		return sqldb.Err("park order", err)
	}
	return nil
}

// SetPriced records the prices the reservation returned and moves the
// order from StepCreated to StepReserved, if owner holds its claim.
func (s *SQLStore) SetPriced(ctx context.Context, id, owner string, items []Item, total int64, currency string) error {
	return sqldb.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		for _, it := range items {
			if _, err := tx.ExecContext(ctx, s.db.Rebind(priceItemSQL), it.UnitPriceCents, id, it.ProductID); err != nil {
				return sqldb.Err("price order item", err)
			}
		}
		res, err := tx.ExecContext(ctx, s.db.Rebind(setPricedSQL), total, currency, StepReserved, time.Now().UTC(), id, StepCreated, owner)
		if err != nil {
			return sqldb.Err("price order", err)
		}
		return changed(res)
	})
}

// SetStep moves a PENDING order from step from to step to, if owner holds
// its claim (errClaimLost otherwise).
func (s *SQLStore) SetStep(ctx context.Context, id, owner, from, to string) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(setStepSQL), to, time.Now().UTC(), id, from, owner)
	if err != nil {
		return sqldb.Err("set order step", err)
	}
	return changed(res)
}

// Finish moves a PENDING order to its final status with its event, in one
// transaction, if owner holds its claim (and releases it). It reports
// false, writing nothing, when the order was no longer PENDING or owner
// lost the claim (another run finished it, or is finishing it).
func (s *SQLStore) Finish(ctx context.Context, id, owner, status string, paymentID, reason *string, ev events.Envelope) (bool, error) {
	var done bool
	err := s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		res, err := tx.ExecContext(ctx, s.db.Rebind(finishSQL), status, paymentID, reason, time.Now().UTC(), id, owner)
		if err != nil {
			return sqldb.Err("finish order", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		done = true
		return tx.Record(ctx, ev)
	})
	return done, err
}

// Get returns order id with its items.
func (s *SQLStore) Get(ctx context.Context, id string) (Order, error) {
	var o Order
	if err := s.db.GetContext(ctx, &o, s.db.Rebind(getOrderSQL), id); err != nil {
		return Order{}, notFoundOr(err, id)
	}
	return s.withItems(ctx, o)
}

// GetByKey returns the user's order created with key and its request hash.
func (s *SQLStore) GetByKey(ctx context.Context, userID, key string, since time.Time) (Order, string, error) {
	var row struct {
		Order
		RequestHash string `db:"request_hash"`
	}
	if err := s.db.GetContext(ctx, &row, s.db.Rebind(getByKeySQL), userID, key, since.UTC()); err != nil {
		return Order{}, "", notFoundOr(err, "with key "+key)
	}
	o, err := s.withItems(ctx, row.Order)
	return o, row.RequestHash, err
}

// ListByUser returns up to limit of the user's orders with ids after after,
// in id order (ids are time-ordered UUIDv7, so this is creation order).
func (s *SQLStore) ListByUser(ctx context.Context, userID string, limit int, after string) ([]Order, error) {
	return s.list(ctx, listByUserSQL, userID, after, limit)
}

// Finished returns orders finished after since, oldest first.
func (s *SQLStore) Finished(ctx context.Context, since time.Time, limit int) ([]Order, error) {
	return s.list(ctx, finishedSQL, since.UTC(), limit)
}

// Pending returns PENDING orders untouched since before that are due for
// an attempt at now (unclaimed, unparked), oldest first.
func (s *SQLStore) Pending(ctx context.Context, before, now time.Time, limit int) ([]Order, error) {
	return s.list(ctx, pendingSQL, before.UTC(), now.UTC(), now.UTC(), limit)
}

func (s *SQLStore) list(ctx context.Context, query string, args ...any) ([]Order, error) {
	var orders []Order
	if err := s.db.SelectContext(ctx, &orders, s.db.Rebind(query), args...); err != nil {
		return nil, sqldb.Err("list orders", err)
	}
	for i := range orders {
		o, err := s.withItems(ctx, orders[i])
		if err != nil {
			return nil, err
		}
		orders[i] = o
	}
	return orders, nil
}

func (s *SQLStore) withItems(ctx context.Context, o Order) (Order, error) {
	o.Items = []Item{}
	if err := s.db.SelectContext(ctx, &o.Items, s.db.Rebind(getItemsSQL), o.ID); err != nil {
		return Order{}, sqldb.Err("get order items", err)
	}
	o.CreatedAt = o.CreatedAt.UTC()
	// The one cancellation that follows a charge is refunded first.
	o.Refunded = o.Status == StatusCancelled && deref(o.CancelReason) == ReasonReservationLost
	return o, nil
}

func notFoundOr(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errs.New(errs.NotFound, "order_not_found", fmt.Sprintf("no order %s", what))
	}
	return sqldb.Err("get order", err)
}
