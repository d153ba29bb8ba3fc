package order

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"regexp"
	"time"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/paging"
)

// Service manages orders. The caller, whose identity the context carries
// (kit/auth), owns what it creates and sees only what it owns.
type Service interface {
	// Create runs a checkout: it records a PENDING order, reserves stock,
	// charges the card and confirms the order, or cancels it with a
	// reason. The same idempotency key with the same request returns that
	// order (replayed = true), resuming its checkout if it was
	// interrupted; with a different request it is a Conflict.
	Create(ctx context.Context, idempotencyKey string, req CreateRequest) (o Order, replayed bool, err error)
	Get(ctx context.Context, id string) (Order, error)
	// List returns a page of the caller's orders, oldest first.
	List(ctx context.Context, req paging.Request) (paging.Page[Order], error)
}

// Store keeps orders.
type Store interface {
	// Create stores o under the user's idempotencyKey; a key last used
	// for an order created before keysSince is free again.
	Create(ctx context.Context, o Order, idempotencyKey, requestHash string, created events.Envelope, keysSince time.Time) error
	Get(ctx context.Context, id string) (Order, error)
	// GetByKey returns the user's order of key created at or after since,
	// and its request's hash.
	GetByKey(ctx context.Context, userID, key string, since time.Time) (Order, string, error)
	ListByUser(ctx context.Context, userID string, limit int, after string) ([]Order, error)
	// A checkout run holds the order's claim (Claim ... Release); only the
	// holder moves its step (compare-and-set on the expected step) or
	// finishes it.
	Claim(ctx context.Context, id, owner string, until, now time.Time) (bool, error)
	Release(ctx context.Context, id, owner string) error
	SetPriced(ctx context.Context, id, owner string, items []Item, total int64, currency string) error
	SetStep(ctx context.Context, id, owner, from, to string) error
	Finish(ctx context.Context, id, owner, status string, paymentID, reason *string, ev events.Envelope) (bool, error)
	// Recovery: the due PENDING orders, a failed attempt, parking.
	Pending(ctx context.Context, before, now time.Time, limit int) ([]Order, error)
	Retry(ctx context.Context, id string, next time.Time) error
	Park(ctx context.Context, id string, now time.Time) error
	// Reconciliation: finished orders, oldest first.
	Finished(ctx context.Context, since time.Time, limit int) ([]Order, error)
}

// Users fetches user profiles.
type Users interface {
	Get(ctx context.Context, id string) (Profile, error)
}

// Deps are the service's collaborators.
type Deps struct {
	Store     Store
	Users     Users
	Inventory Inventory
	Payments  Payments
	Logger    *slog.Logger
	// KeyTTL is how long an Idempotency-Key replays its order (default
	// DefaultKeyTTL); after it, the same key is a new request.
	KeyTTL time.Duration
	// Lease is how long a checkout run's claim on an order lasts (default
	// 30 s): longer than any run, so only a crashed run's claim expires.
	Lease time.Duration
}

// DefaultKeyTTL is how long idempotency keys live, as Stripe's do.
const DefaultKeyTTL = 24 * time.Hour

type service struct {
	Deps
	now func() time.Time
}

// New returns the order service.
func New(d Deps) Service {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	if d.KeyTTL <= 0 {
		d.KeyTTL = DefaultKeyTTL
	}
	if d.Lease <= 0 {
		d.Lease = 30 * time.Second
	}
	return &service{Deps: d, now: func() time.Time { return time.Now().UTC() }}
}

// Limits on one order.
const (
	maxItems    = 50
	maxQuantity = 1000
)

var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *service) Create(ctx context.Context, key string, req CreateRequest) (Order, bool, error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return Order{}, false, err
	}
	if err := validate(req); err != nil {
		return Order{}, false, err
	}
	hash := requestHash(req)
	o, replayed, err := s.existing(ctx, caller.UserID, key, hash)
	if err != nil {
		return Order{}, false, err
	}
	if !replayed {
		o, err = s.create(ctx, caller.UserID, key, hash, req)
		if err == nil {
			crashAt("created")
		}
		if e := errs.As(err); err != nil && e.Code == "idempotency_key_used" {
			// Another request with the same key won the race: this is a replay.
			o, replayed, err = s.existing(ctx, caller.UserID, key, hash)
		}
		if err != nil {
			return Order{}, false, err
		}
	}
	o, err = s.checkout(ctx, o)
	return s.withUser(ctx, o), replayed, err
}

// keysSince is the creation time of the oldest order whose key still
// replays it.
func (s *service) keysSince() time.Time { return s.now().Add(-s.KeyTTL) }

// existing returns the order made earlier with key, if any.
func (s *service) existing(ctx context.Context, userID, key, hash string) (Order, bool, error) {
	o, firstHash, err := s.Store.GetByKey(ctx, userID, key, s.keysSince())
	switch {
	case errs.Is(err, errs.NotFound):
		return Order{}, false, nil
	case err != nil:
		return Order{}, false, err
	case firstHash != hash:
		return Order{}, false, errs.New(errs.Conflict, "idempotency_mismatch",
			"this Idempotency-Key was used with a different request").WithDetails(map[string]any{"order_id": o.ID})
	}
	return o, true, nil
}

func (s *service) create(ctx context.Context, userID, key, hash string, req CreateRequest) (Order, error) {
	o := Order{
		ID: uuid.Must(uuid.NewV7()).String(), UserID: userID, Status: StatusPending, Currency: "USD",
		CardToken: req.Payment.CardToken, Step: StepCreated, CreatedAt: s.now().Truncate(time.Microsecond),
	}
	for _, it := range req.Items {
		// Lines are priced by the reservation, at checkout.
		o.Items = append(o.Items, Item{ProductID: it.ProductID, Quantity: it.Quantity})
	}
	ev, err := orderEvent(events.OrderCreated, o)
	if err != nil {
		return Order{}, err
	}
	if err := s.Store.Create(ctx, o, key, hash, ev, s.keysSince()); err != nil {
		return Order{}, err
	}
	return o, nil
}

func (s *service) Get(ctx context.Context, id string) (Order, error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return Order{}, err
	}
	notFound := errs.Newf(errs.NotFound, "order_not_found", "no order %q", id)
	if !idPattern.MatchString(id) {
		return Order{}, notFound
	}
	o, err := s.Store.Get(ctx, id)
	if err != nil {
		return Order{}, err
	}
	if o.UserID != caller.UserID {
		return Order{}, notFound // not "forbidden": do not reveal that it exists
	}
	return s.withUser(ctx, o), nil
}

func (s *service) List(ctx context.Context, req paging.Request) (paging.Page[Order], error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return paging.Page[Order]{}, err
	}
	orders, err := s.Store.ListByUser(ctx, caller.UserID, req.Limit+1, req.After)
	if err != nil {
		return paging.Page[Order]{}, err
	}
	page := paging.Build(orders, req, func(o Order) string { return o.ID })
	if len(page.Items) > 0 {
		// One profile serves every order of the page: same owner.
		withUser := s.withUser(ctx, page.Items[0])
		for i := range page.Items {
			page.Items[i].User, page.Items[i].Degraded = withUser.User, withUser.Degraded
		}
	}
	return page, nil
}

// withUser embeds the owner's profile. A user service that cannot answer
// degrades the order instead of failing it.
func (s *service) withUser(ctx context.Context, o Order) Order {
	if o.ID == "" {
		return o
	}
	o.Degraded = []string{}
	p, err := s.Users.Get(ctx, o.UserID)
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
