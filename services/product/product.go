// Package product owns the catalog and its stock. Clients browse products;
// the order service reserves stock for an order at checkout, then commits
// the reservation (paid) or releases it (cancelled), each step idempotent
// on the order id:
//
//	             reserve            commit
//	(none) ──────────────▶ RESERVED ──────▶ COMMITTED
//	   │                      │ release
//	   │ release (tombstone)  ▼
//	   └────────────────▶ RELEASED   (a late reserve is refused)
//
// Stock only moves inside a transaction that also writes an
// inventory.updated event to the outbox, and only through conditional
// updates (stock >= wanted), so it is never oversold.
//
//	HTTP (the catalog) ─────────────────────▶ transport_http.go ──┐
//	gRPC (meshop.product.v1.Reservations) ──▶ transport_grpc.go ──┴▶ endpoints.go ──▶ service.go ──▶ store.go ──▶ DB (+ outbox)
//
// The reservation calls are the internal gRPC API (proto/meshop/product/v1,
// called through package client); the edge never routes it.
package product

import (
	"embed"

	"github.com/meshop/meshop/services/kit/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the product database's schema and seeded catalog.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("product", migrations, "migrations")
}

// Service name, as events' source.
const Name = "product"

// Reservation statuses.
const (
	StatusReserved  = "RESERVED"
	StatusCommitted = "COMMITTED"
	StatusReleased  = "RELEASED"
)

// Product is a catalog entry with its stock.
type Product struct {
	ID          string `json:"id" db:"id"`
	Name        string `json:"name" db:"name"`
	Description string `json:"description" db:"description"`
	PriceCents  int64  `json:"price_cents" db:"price_cents"`
	Currency    string `json:"currency" db:"currency"`
	Stock       int    `json:"stock" db:"stock"`
}

// NewProduct is the body of POST /products. ID is optional; Currency
// defaults to USD.
type NewProduct struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	PriceCents  int64  `json:"price_cents"`
	Currency    string `json:"currency"`
	Stock       int    `json:"stock"`
}

// ReserveRequest is what Reserve takes (the gRPC ReserveRequest).
type ReserveRequest struct {
	OrderID string        `json:"order_id"`
	Items   []ItemRequest `json:"items"`
}

// ItemRequest is one line to reserve.
type ItemRequest struct {
	ProductID string `json:"product_id"`
	Quantity  int    `json:"quantity"`
}

// Reservation is the stock held for one order. Items are priced at the
// time of the reservation: that is the price the order pays.
type Reservation struct {
	OrderID string         `json:"order_id" db:"order_id"`
	Status  string         `json:"status" db:"status"`
	Items   []ReservedItem `json:"items,omitempty"`
}

// ReservedItem is one reserved line.
type ReservedItem struct {
	ProductID      string `json:"product_id" db:"product_id"`
	Quantity       int    `json:"quantity" db:"quantity"`
	UnitPriceCents int64  `json:"unit_price_cents" db:"unit_price_cents"`
	Currency       string `json:"currency" db:"currency"`
}

// InventoryUpdated is the data of an inventory.updated event: the stock of
// a product after a change.
type InventoryUpdated struct {
	ProductID string `json:"product_id"`
	Stock     int    `json:"stock"`
}
