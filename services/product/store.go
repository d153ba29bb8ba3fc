package product

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/product/client"
)

const (
	productColumns   = `id, name, description, price_cents, currency, stock`
	listProductsSQL  = `SELECT ` + productColumns + ` FROM products WHERE id > ? ORDER BY id LIMIT ?`
	getProductSQL    = `SELECT ` + productColumns + ` FROM products WHERE id = ?`
	insertProductSQL = `INSERT INTO products (` + productColumns + `) VALUES (?, ?, ?, ?, ?, ?)`
	getStockSQL      = `SELECT stock FROM products WHERE id = ?`
	// takeStockSQL is the only way stock goes down: the row is changed only
	// if enough is left, checked by the database under the row's lock, so
	// concurrent reservations can never oversell.
	takeStockSQL    = `UPDATE products SET stock = stock - ? WHERE id = ? AND stock >= ? RETURNING stock, price_cents, currency`
	returnStockSQL  = `UPDATE products SET stock = stock + ? WHERE id = ? RETURNING stock`
	insertResSQL    = `INSERT INTO reservations (order_id, status, created_at, updated_at) VALUES (?, ?, ?, ?)`
	getResSQL       = `SELECT order_id, status FROM reservations WHERE order_id = ?`
	setResStatusSQL = `UPDATE reservations SET status = ?, updated_at = ? WHERE order_id = ? AND status = ?`
	insertItemSQL   = `INSERT INTO reservation_items (order_id, product_id, quantity, unit_price_cents, currency) VALUES (?, ?, ?, ?, ?)`
	getItemsSQL     = `SELECT product_id, quantity, unit_price_cents, currency FROM reservation_items WHERE order_id = ? ORDER BY product_id`
)

// SQLStore is the sqlx Store, on PostgreSQL or SQLite. Every stock change
// records an inventory.updated event in the same transaction.
type SQLStore struct {
	db     *sqlx.DB
	outbox *events.Outbox
	now    func() time.Time
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations) that records its events through outbox.
func NewStore(db *sqlx.DB, outbox *events.Outbox) *SQLStore {
	return &SQLStore{db: db, outbox: outbox,
		now: func() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }}
}

// List returns up to limit products with ids after after, by id.
func (s *SQLStore) List(ctx context.Context, after string, limit int) ([]Product, error) {
	out := []Product{}
	if err := s.db.SelectContext(ctx, &out, s.db.Rebind(listProductsSQL), after, limit); err != nil {
		return nil, sqldb.Err("list products", err)
	}
	return out, nil
}

// Get returns product id.
func (s *SQLStore) Get(ctx context.Context, id string) (Product, error) {
	var p Product
	err := s.db.GetContext(ctx, &p, s.db.Rebind(getProductSQL), id)
	if errors.Is(err, sql.ErrNoRows) {
		return Product{}, errs.Newf(errs.NotFound, "product_not_found", "no product %q", id)
	}
	if err != nil {
		return Product{}, sqldb.Err("get product", err)
	}
	return p, nil
}

// Insert adds p and announces its stock; a taken id is a Conflict.
func (s *SQLStore) Insert(ctx context.Context, p Product) error {
	return s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(insertProductSQL), p.ID, p.Name, p.Description, p.PriceCents, p.Currency, p.Stock)
		if sqldb.IsUniqueViolation(err) {
			return errs.Newf(errs.Conflict, "product_exists", "product %s already exists", p.ID)
		}
		if err != nil {
			return sqldb.Err("insert product", err)
		}
		return s.recordStock(ctx, tx, p.ID, p.Stock)
	})
}

// Reserve takes the stock of every item for orderID in one transaction:
// all items or none. The reservation row is written first, so a second
// reserve for the same order (concurrent or late) fails on its key before
// touching any stock; it then gets the existing reservation back with
// created false, whatever its status, for the service to judge.
func (s *SQLStore) Reserve(ctx context.Context, orderID string, items []ItemRequest) (Reservation, bool, error) {
	// Lock rows in one global order (by product id), so two reservations
	// of the same products cannot deadlock each other on PostgreSQL.
	items = slices.Clone(items)
	slices.SortFunc(items, func(a, b ItemRequest) int { return strings.Compare(a.ProductID, b.ProductID) })
	res := Reservation{OrderID: orderID, Status: StatusReserved, Items: make([]ReservedItem, 0, len(items))}
	err := s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		now := s.now()
		if _, err := tx.ExecContext(ctx, tx.Rebind(insertResSQL), orderID, StatusReserved, now, now); err != nil {
			if sqldb.IsUniqueViolation(err) {
				return errReservationExists
			}
			return sqldb.Err("insert reservation", err)
		}
		for _, it := range items {
			var left int
			line := ReservedItem{ProductID: it.ProductID, Quantity: it.Quantity}
			err := tx.QueryRowxContext(ctx, tx.Rebind(takeStockSQL), it.Quantity, it.ProductID, it.Quantity).
				Scan(&left, &line.UnitPriceCents, &line.Currency)
			if errors.Is(err, sql.ErrNoRows) {
				return s.whyNotTaken(ctx, tx, it)
			}
			if err != nil {
				return sqldb.Err("take stock", err)
			}
			if _, err := tx.ExecContext(ctx, tx.Rebind(insertItemSQL), orderID, line.ProductID, line.Quantity,
				line.UnitPriceCents, line.Currency); err != nil {
				return sqldb.Err("insert reservation item", err)
			}
			if err := s.recordStock(ctx, tx, it.ProductID, left); err != nil {
				return err
			}
			res.Items = append(res.Items, line)
		}
		return nil
	})
	if errors.Is(err, errReservationExists) {
		existing, err := s.GetReservation(ctx, orderID)
		return existing, false, err
	}
	if err != nil {
		return Reservation{}, false, err
	}
	return res, true, nil
}

// errReservationExists rolls back a reserve whose order already has a row.
var errReservationExists = errors.New("reservation exists")

// whyNotTaken explains a conditional update that changed nothing: the
// product does not exist, or it has too little stock.
func (s *SQLStore) whyNotTaken(ctx context.Context, tx *events.Tx, it ItemRequest) error {
	var available int
	err := tx.GetContext(ctx, &available, tx.Rebind(getStockSQL), it.ProductID)
	if errors.Is(err, sql.ErrNoRows) {
		return errs.Newf(errs.Validation, client.ReasonUnknownProduct, "no product %q", it.ProductID).
			WithDetails(map[string]any{"product_id": it.ProductID})
	}
	if err != nil {
		return sqldb.Err("read stock", err)
	}
	return errs.Newf(errs.Conflict, client.ReasonOutOfStock, "only %d of %s left, %d requested", available, it.ProductID, it.Quantity).
		WithDetails(map[string]any{"product_id": it.ProductID, "requested": it.Quantity, "available": available})
}

// Commit moves orderID's reservation from RESERVED to COMMITTED and
// returns it as it then stands (its status may be another one: the service
// judges). No reservation is NotFound.
func (s *SQLStore) Commit(ctx context.Context, orderID string) (Reservation, error) {
	return s.transition(ctx, orderID, func() error {
		_, err := s.db.ExecContext(ctx, s.db.Rebind(setResStatusSQL), StatusCommitted, s.now(), orderID, StatusReserved)
		if err != nil {
			return sqldb.Err("commit reservation", err)
		}
		return nil
	})
}

// transitionAttempts bounds how often a commit or release that raced a
// reserve of the same order is tried again.
const transitionAttempts = 5

// transition runs step, which moves a RESERVED reservation on, and returns
// the reservation as it then stands. A reservation still RESERVED after
// step was committed by a concurrent reserve after step looked (its insert
// was not yet visible), so step runs again.
func (s *SQLStore) transition(ctx context.Context, orderID string, step func() error) (Reservation, error) {
	for range transitionAttempts {
		err := step()
		if errors.Is(err, errReservationExists) {
			continue
		}
		if err != nil {
			return Reservation{}, err
		}
		r, err := s.GetReservation(ctx, orderID)
		if err != nil || r.Status != StatusReserved {
			return r, err
		}
	}
	return Reservation{}, errs.Newf(errs.Unavailable, client.ReasonReservationBusy,
		"the reservation of order %s is changing; retry", orderID)
}

// Release moves orderID's reservation from RESERVED to RELEASED and gives
// its stock back, in one transaction. An order with no reservation gets a
// RELEASED tombstone, so a reserve arriving late (after the order gave up)
// is refused. It returns the reservation as it then stands.
func (s *SQLStore) Release(ctx context.Context, orderID string) (Reservation, error) {
	// A reserve racing the tombstone's insert makes it fail on the key, or
	// leaves the reservation RESERVED; the next attempt releases it.
	return s.transition(ctx, orderID, func() error {
		return s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error { return s.release(ctx, tx, orderID) })
	})
}

func (s *SQLStore) release(ctx context.Context, tx *events.Tx, orderID string) error {
	now := s.now()
	r, err := tx.ExecContext(ctx, tx.Rebind(setResStatusSQL), StatusReleased, now, orderID, StatusReserved)
	if err != nil {
		return sqldb.Err("release reservation", err)
	}
	if n, err := r.RowsAffected(); err != nil {
		return sqldb.Err("release reservation", err)
	} else if n == 0 {
		// Already released or committed (left as it is), reserved since the
		// update looked (transition retries), or never reserved.
		var status string
		err := tx.GetContext(ctx, &status, tx.Rebind(`SELECT status FROM reservations WHERE order_id = ?`), orderID)
		if !errors.Is(err, sql.ErrNoRows) {
			if err != nil {
				return sqldb.Err("read reservation", err)
			}
			return nil
		}
		_, err = tx.ExecContext(ctx, tx.Rebind(insertResSQL), orderID, StatusReleased, now, now)
		if sqldb.IsUniqueViolation(err) {
			return errReservationExists
		}
		if err != nil {
			return sqldb.Err("insert release tombstone", err)
		}
		return nil
	}
	var items []ReservedItem
	if err := tx.SelectContext(ctx, &items, tx.Rebind(getItemsSQL), orderID); err != nil {
		return sqldb.Err("read reservation items", err)
	}
	for _, it := range items { // ordered by product id, as in Reserve
		var stock int
		if err := tx.GetContext(ctx, &stock, tx.Rebind(returnStockSQL), it.Quantity, it.ProductID); err != nil {
			return sqldb.Err("return stock", err)
		}
		if err := s.recordStock(ctx, tx, it.ProductID, stock); err != nil {
			return err
		}
	}
	return nil
}

// GetReservation returns orderID's reservation with its items.
func (s *SQLStore) GetReservation(ctx context.Context, orderID string) (Reservation, error) {
	var r Reservation
	err := s.db.GetContext(ctx, &r, s.db.Rebind(getResSQL), orderID)
	if errors.Is(err, sql.ErrNoRows) {
		return Reservation{}, errs.Newf(errs.NotFound, client.ReasonReservationNotFound, "no reservation for order %q", orderID)
	}
	if err != nil {
		return Reservation{}, sqldb.Err("get reservation", err)
	}
	r.Items = []ReservedItem{}
	if err := s.db.SelectContext(ctx, &r.Items, s.db.Rebind(getItemsSQL), orderID); err != nil {
		return Reservation{}, sqldb.Err("get reservation items", err)
	}
	return r, nil
}

// recordStock writes inventory.updated for productID's new stock into tx.
func (s *SQLStore) recordStock(ctx context.Context, tx *events.Tx, productID string, stock int) error {
	ev, err := events.New(Name, events.InventoryUpdated, productID, InventoryUpdated{ProductID: productID, Stock: stock})
	if err != nil {
		return errs.Wrap(errs.Internal, "event", "build inventory.updated", err)
	}
	if err := tx.Record(ctx, ev); err != nil {
		return errs.Wrap(errs.Internal, "event", "record inventory.updated", err)
	}
	return nil
}
