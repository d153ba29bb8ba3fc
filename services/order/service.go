package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/errs"
)

// Service manages orders. userID is the caller, who owns what it creates
// and sees only what it owns.
type Service interface {
	// Create records a PENDING order. The same idempotency key with the
	// same request returns the first order (replayed = true); with a
	// different request it is a Conflict.
	Create(ctx context.Context, userID, idempotencyKey string, req CreateRequest) (o Order, replayed bool, err error)
	Get(ctx context.Context, userID, id string) (Order, error)
}

// Store keeps orders.
type Store interface {
	// Insert stores o with the key and request hash that created it; a key
	// already used by the user is a Conflict with code idempotency_key_used.
	Insert(ctx context.Context, o Order, idempotencyKey, requestHash string) error
	Get(ctx context.Context, id string) (Order, error)
	// GetByKey returns the user's order created with key, and its request hash.
	GetByKey(ctx context.Context, userID, key string) (Order, string, error)
}

// Users fetches user profiles.
type Users interface {
	Get(ctx context.Context, id string) (Profile, error)
}

type service struct {
	store Store
	users Users
	now   func() time.Time
}

// New returns the order service.
func New(store Store, users Users) Service {
	return &service{store: store, users: users, now: func() time.Time { return time.Now().UTC() }}
}

// Limits on one order.
const (
	maxItems    = 50
	maxQuantity = 1000
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *service) Create(ctx context.Context, userID, key string, req CreateRequest) (Order, bool, error) {
	if err := validate(req); err != nil {
		return Order{}, false, err
	}
	hash := requestHash(req)
	if o, ok, err := s.replay(ctx, userID, key, hash); ok || err != nil {
		return o, ok, err
	}
	o := Order{
		ID: uuid.Must(uuid.NewV7()).String(), UserID: userID, Status: StatusPending,
		Currency: Currency, CreatedAt: s.now().Truncate(time.Microsecond),
	}
	for _, it := range req.Items {
		// Prices come from the product service at checkout; until then a
		// PENDING order's lines are unpriced.
		o.Items = append(o.Items, Item{ProductID: it.ProductID, Quantity: it.Quantity})
	}
	err := s.store.Insert(ctx, o, key, hash)
	if e := errs.As(err); err != nil && e.Code == "idempotency_key_used" {
		// Another request with the same key won the race: answer as a replay.
		if o, ok, err := s.replay(ctx, userID, key, hash); ok || err != nil {
			return o, ok, err
		}
	}
	if err != nil {
		return Order{}, false, err
	}
	return s.withUser(ctx, o), false, nil
}

// replay answers a request whose idempotency key was used before.
func (s *service) replay(ctx context.Context, userID, key, hash string) (Order, bool, error) {
	o, firstHash, err := s.store.GetByKey(ctx, userID, key)
	switch {
	case errs.Is(err, errs.NotFound):
		return Order{}, false, nil
	case err != nil:
		return Order{}, false, err
	case firstHash != hash:
		return Order{}, false, errs.New(errs.Conflict, "idempotency_mismatch",
			"this Idempotency-Key was used with a different request").WithDetails(map[string]any{"order_id": o.ID})
	}
	return s.withUser(ctx, o), true, nil
}

func (s *service) Get(ctx context.Context, userID, id string) (Order, error) {
	notFound := errs.Newf(errs.NotFound, "order_not_found", "no order %q", id)
	if !idPattern.MatchString(id) {
		return Order{}, notFound
	}
	o, err := s.store.Get(ctx, id)
	if err != nil {
		return Order{}, err
	}
	if o.UserID != userID {
		return Order{}, notFound // not "forbidden": do not reveal that it exists
	}
	return s.withUser(ctx, o), nil
}

// withUser embeds the owner's profile. A user service that cannot answer
// degrades the order instead of failing it.
func (s *service) withUser(ctx context.Context, o Order) Order {
	o.Degraded = []string{}
	p, err := s.users.Get(ctx, o.UserID)
	switch {
	case err == nil:
		o.User = &p
	case errs.Is(err, errs.NotFound):
		o.User = nil // the profile is gone; nothing is degraded
	default:
		o.User = nil
		o.Degraded = append(o.Degraded, "user")
	}
	return o
}

// validate returns every problem of req as one 422.
func validate(req CreateRequest) error {
	problems := map[string]any{}
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
		case !idPattern.MatchString(it.ProductID):
			problems[field+".product_id"] = "must be a product id"
		case seen[it.ProductID]:
			problems[field+".product_id"] = "appears twice; combine the quantities"
		}
		seen[it.ProductID] = true
		if it.Quantity < 1 || it.Quantity > maxQuantity {
			problems[field+".quantity"] = fmt.Sprintf("must be between 1 and %d", maxQuantity)
		}
	}
	if t := req.Payment.CardToken; t == "" || len(t) > 64 {
		problems["payment.card_token"] = "is required (e.g. tok_visa)"
	}
	if len(problems) > 0 {
		return errs.New(errs.Validation, "invalid_order", "the order has invalid fields").WithDetails(problems)
	}
	return nil
}

// requestHash identifies a request's content, whatever its JSON spacing or
// key order: it hashes the decoded request re-encoded.
func requestHash(req CreateRequest) string {
	b, _ := json.Marshal(req) // a struct of strings and ints always encodes
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
