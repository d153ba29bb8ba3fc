package order

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/sqldb"
)

const (
	insertOrderSQL = `INSERT INTO orders (id, user_id, status, total_cents, currency, payment_id, cancel_reason,
		idempotency_key, request_hash, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`
	insertItemSQL = `INSERT INTO order_items (order_id, line, product_id, quantity, unit_price_cents) VALUES (?, ?, ?, ?, ?)`
	orderColumns  = `id, user_id, status, total_cents, currency, payment_id, cancel_reason, created_at`
	getOrderSQL   = `SELECT ` + orderColumns + ` FROM orders WHERE id = ?`
	getByKeySQL   = `SELECT ` + orderColumns + `, request_hash FROM orders WHERE user_id = ? AND idempotency_key = ?`
	getItemsSQL   = `SELECT product_id, quantity, unit_price_cents FROM order_items WHERE order_id = ? ORDER BY line`
)

// SQLStore is the sqlx Store, on PostgreSQL or SQLite.
type SQLStore struct{ db *sqlx.DB }

// NewStore returns a store over db (migrated with Migrations).
func NewStore(db *sqlx.DB) *SQLStore { return &SQLStore{db: db} }

// Insert stores o and its items in one transaction: all or nothing.
func (s *SQLStore) Insert(ctx context.Context, o Order, key, hash string) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return errs.Wrap(errs.Internal, "db", "begin", err)
	}
	defer tx.Rollback()
	_, err = tx.ExecContext(ctx, s.db.Rebind(insertOrderSQL), o.ID, o.UserID, o.Status, o.TotalCents, o.Currency,
		o.PaymentID, o.CancelReason, key, hash, o.CreatedAt, o.CreatedAt)
	if sqldb.IsUniqueViolation(err) {
		return errs.New(errs.Conflict, "idempotency_key_used", "this Idempotency-Key was already used")
	}
	if err != nil {
		return errs.Wrap(errs.Internal, "db", "insert order", err)
	}
	for i, it := range o.Items {
		if _, err := tx.ExecContext(ctx, s.db.Rebind(insertItemSQL), o.ID, i, it.ProductID, it.Quantity, it.UnitPriceCents); err != nil {
			return errs.Wrap(errs.Internal, "db", "insert order item", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return errs.Wrap(errs.Internal, "db", "commit order", err)
	}
	return nil
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
func (s *SQLStore) GetByKey(ctx context.Context, userID, key string) (Order, string, error) {
	var row struct {
		Order
		RequestHash string `db:"request_hash"`
	}
	if err := s.db.GetContext(ctx, &row, s.db.Rebind(getByKeySQL), userID, key); err != nil {
		return Order{}, "", notFoundOr(err, "with key "+key)
	}
	o, err := s.withItems(ctx, row.Order)
	return o, row.RequestHash, err
}

func (s *SQLStore) withItems(ctx context.Context, o Order) (Order, error) {
	o.Items = []Item{}
	if err := s.db.SelectContext(ctx, &o.Items, s.db.Rebind(getItemsSQL), o.ID); err != nil {
		return Order{}, errs.Wrap(errs.Internal, "db", "get order items", err)
	}
	o.CreatedAt = o.CreatedAt.UTC()
	return o, nil
}

func notFoundOr(err error, what string) error {
	if errors.Is(err, sql.ErrNoRows) {
		return errs.New(errs.NotFound, "order_not_found", fmt.Sprintf("no order %s", what))
	}
	return errs.Wrap(errs.Internal, "db", "get order", err)
}
