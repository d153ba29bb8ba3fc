package product

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/paging"
	"github.com/meshop/meshop/services/product/client"
)

// Service is the catalog and its stock.
type Service interface {
	// List returns a page of the catalog, ordered by id.
	List(ctx context.Context, req paging.Request) (paging.Page[Product], error)
	Get(ctx context.Context, id string) (Product, error)
	// Create adds a product; the caller must have role admin.
	Create(ctx context.Context, np NewProduct) (Product, error)
	// Reserve holds stock for every item of an order, or for none. A
	// repeat for the same order with the same items returns the first
	// reservation (created = false).
	Reserve(ctx context.Context, req ReserveRequest) (r Reservation, created bool, err error)
	// Commit marks an order's reservation as paid for. Idempotent.
	Commit(ctx context.Context, orderID string) (Reservation, error)
	// Release gives an order's reserved stock back. Idempotent; an order
	// that never reserved is marked released, so a late Reserve fails.
	Release(ctx context.Context, orderID string) (Reservation, error)
}

// Store keeps products and reservations (see SQLStore for the semantics).
type Store interface {
	List(ctx context.Context, after string, limit int) ([]Product, error)
	Get(ctx context.Context, id string) (Product, error)
	Insert(ctx context.Context, p Product) error
	Reserve(ctx context.Context, orderID string, items []ItemRequest) (Reservation, bool, error)
	Commit(ctx context.Context, orderID string) (Reservation, error)
	Release(ctx context.Context, orderID string) (Reservation, error)
}

// Limits on one reservation and one product.
const (
	maxItems       = 100
	maxQuantity    = 1_000_000
	maxStock       = 1_000_000_000
	maxPriceCents  = 100_000_000_00 // 100 million in major units
	maxDescription = 2000
)

type service struct{ store Store }

// New returns the product service over store.
func New(store Store) Service { return &service{store: store} }

// idPattern keeps ids URL-safe and bounded; ids are otherwise opaque.
var (
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	currencyPattern = regexp.MustCompile(`^[A-Z]{3}$`)
)

func (s *service) List(ctx context.Context, req paging.Request) (paging.Page[Product], error) {
	items, err := s.store.List(ctx, req.After, req.Limit+1)
	if err != nil {
		return paging.Page[Product]{}, err
	}
	return paging.Build(items, req, func(p Product) string { return p.ID }), nil
}

func (s *service) Get(ctx context.Context, id string) (Product, error) {
	if !idPattern.MatchString(id) {
		return Product{}, errs.Newf(errs.NotFound, "product_not_found", "no product %q", id)
	}
	return s.store.Get(ctx, id)
}

func (s *service) Create(ctx context.Context, np NewProduct) (Product, error) {
	if _, err := auth.RequireRole(ctx, auth.RoleAdmin); err != nil {
		return Product{}, err
	}
	p, err := validateProduct(np)
	if err != nil {
		return Product{}, err
	}
	if p.ID == "" {
		p.ID = "p-" + uuid.Must(uuid.NewV7()).String()
	}
	if err := s.store.Insert(ctx, p); err != nil {
		return Product{}, err
	}
	return p, nil
}

// validateProduct normalises np and returns every problem as one 422.
func validateProduct(np NewProduct) (Product, error) {
	p := Product{
		ID: strings.TrimSpace(np.ID), Name: strings.TrimSpace(np.Name), Description: strings.TrimSpace(np.Description),
		PriceCents: np.PriceCents, Currency: strings.TrimSpace(np.Currency), Stock: np.Stock,
	}
	if p.Currency == "" {
		p.Currency = "USD"
	}
	problems := map[string]any{}
	if p.ID != "" && !idPattern.MatchString(p.ID) {
		problems["id"] = "must be 1-64 letters, digits, '-' or '_'"
	}
	if n := utf8.RuneCountInString(p.Name); n == 0 || n > 200 {
		problems["name"] = "must be 1-200 characters"
	}
	if utf8.RuneCountInString(p.Description) > maxDescription {
		problems["description"] = fmt.Sprintf("must be at most %d characters", maxDescription)
	}
	// At least one minor unit: a checkout charges the total, and a
	// payment of 0 is not one the provider takes (issue 12).
	if p.PriceCents < 1 || p.PriceCents > maxPriceCents {
		problems["price_cents"] = fmt.Sprintf("must be between 1 and %d (minor units)", int64(maxPriceCents))
	}
	if !currencyPattern.MatchString(p.Currency) {
		problems["currency"] = "must be a three-letter ISO 4217 code like USD"
	}
	if p.Stock < 0 || p.Stock > maxStock {
		problems["stock"] = fmt.Sprintf("must be between 0 and %d", maxStock)
	}
	if len(problems) > 0 {
		return Product{}, errs.New(errs.Validation, "invalid_product", "the product has invalid fields").WithDetails(problems)
	}
	return p, nil
}

func (s *service) Reserve(ctx context.Context, req ReserveRequest) (Reservation, bool, error) {
	if err := validateReserve(req); err != nil {
		return Reservation{}, false, err
	}
	r, created, err := s.store.Reserve(ctx, req.OrderID, req.Items)
	if err != nil || created {
		return r, created, err
	}
	// The order reserved before: the same request gets the same answer.
	switch {
	case r.Status == StatusReleased:
		return Reservation{}, false, errs.Newf(errs.Conflict, client.ReasonReservationReleased,
			"the reservation of order %s was released; it cannot reserve again", req.OrderID).
			WithDetails(map[string]any{"order_id": req.OrderID})
	case !sameItems(r.Items, req.Items):
		return Reservation{}, false, errs.Newf(errs.Conflict, client.ReasonIdempotencyMismatch,
			"order %s already reserved different items", req.OrderID).
			WithDetails(map[string]any{"order_id": req.OrderID})
	}
	return r, false, nil
}

// validateReserve returns every problem of req as one 422.
func validateReserve(req ReserveRequest) error {
	problems := map[string]any{}
	if !idPattern.MatchString(req.OrderID) {
		problems["order_id"] = "must be 1-64 letters, digits, '-' or '_'"
	}
	switch n := len(req.Items); {
	case n == 0:
		problems["items"] = "at least one item is required"
	case n > maxItems:
		problems["items"] = fmt.Sprintf("at most %d items", maxItems)
	}
	seen := map[string]bool{}
	for i, it := range req.Items {
		field := fmt.Sprintf("items[%d]", i)
		switch {
		case it.ProductID == "":
			problems[field+".product_id"] = "is required"
		case seen[it.ProductID]:
			problems[field+".product_id"] = "appears twice; combine the quantities"
		}
		seen[it.ProductID] = true
		if it.Quantity < 1 || it.Quantity > maxQuantity {
			problems[field+".quantity"] = fmt.Sprintf("must be between 1 and %d", maxQuantity)
		}
	}
	if len(problems) > 0 {
		return errs.New(errs.Validation, client.ReasonInvalidReservation, "the reservation has invalid fields").WithDetails(problems)
	}
	// A product id no product can have is an unknown product, as the
	// store would say; checked here so it never reaches SQL.
	for _, it := range req.Items {
		if !idPattern.MatchString(it.ProductID) {
			return errs.Newf(errs.Validation, client.ReasonUnknownProduct, "no product %q", it.ProductID).
				WithDetails(map[string]any{"product_id": it.ProductID})
		}
	}
	return nil
}

// sameItems reports whether a reservation holds exactly the requested
// products and quantities.
func sameItems(have []ReservedItem, want []ItemRequest) bool {
	if len(have) != len(want) {
		return false
	}
	held := make(map[string]int, len(have))
	for _, it := range have {
		held[it.ProductID] = it.Quantity
	}
	return !slices.ContainsFunc(want, func(it ItemRequest) bool { return held[it.ProductID] != it.Quantity })
}

func (s *service) Commit(ctx context.Context, orderID string) (Reservation, error) {
	if orderID == "" {
		return Reservation{}, errs.New(errs.Invalid, client.ReasonInvalidOrderID, "the order id is required")
	}
	if !idPattern.MatchString(orderID) { // no reservation can have it
		return Reservation{}, errs.Newf(errs.NotFound, client.ReasonReservationNotFound, "no reservation for order %q", orderID)
	}
	r, err := s.store.Commit(ctx, orderID)
	if err != nil {
		return Reservation{}, err
	}
	if r.Status == StatusReleased {
		return Reservation{}, errs.Newf(errs.Conflict, client.ReasonReservationReleased,
			"the reservation of order %s was released; it cannot be committed", orderID).
			WithDetails(map[string]any{"order_id": orderID})
	}
	return Reservation{OrderID: r.OrderID, Status: r.Status}, nil
}

func (s *service) Release(ctx context.Context, orderID string) (Reservation, error) {
	if !idPattern.MatchString(orderID) {
		return Reservation{}, errs.Newf(errs.Validation, client.ReasonInvalidOrderID, "order id %q is not valid", orderID)
	}
	r, err := s.store.Release(ctx, orderID)
	if err != nil {
		return Reservation{}, err
	}
	if r.Status == StatusCommitted {
		return Reservation{}, errs.Newf(errs.Conflict, client.ReasonReservationCommitted,
			"the reservation of order %s was committed; it cannot be released", orderID).
			WithDetails(map[string]any{"order_id": orderID})
	}
	return Reservation{OrderID: r.OrderID, Status: r.Status}, nil
}
