package user

import (
	"context"
	"net/mail"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/user/client"
)

// Service manages user profiles. Get and Me are for users: the caller is
// the verified token's identity, which the context carries (kit/auth).
// Create, Lookup and Delete are for other services, over the internal gRPC
// API (transport_grpc.go) the edge never exposes.
type Service interface {
	Create(ctx context.Context, nu NewUser) (User, error)
	// Get returns profile id to its owner or an admin. Anyone else gets
	// NotFound, as for a missing id, so ids of others do not leak.
	Get(ctx context.Context, id string) (User, error)
	// Me returns the caller's own profile.
	Me(ctx context.Context) (User, error)
	// Lookup returns profile id to a service (order embeds it, auth reads
	// the role at login).
	Lookup(ctx context.Context, id string) (User, error)
	// Delete removes profile id; deleting a missing profile is not an
	// error (auth's undo of a failed registration may be retried).
	Delete(ctx context.Context, id string) error
}

// Store keeps profiles.
type Store interface {
	Insert(ctx context.Context, u User) error
	Get(ctx context.Context, id string) (User, error)
	Delete(ctx context.Context, id string) error
}

type service struct {
	store Store
	now   func() time.Time
}

// New returns the user service over store.
func New(store Store) Service {
	return &service{store: store, now: func() time.Time { return time.Now().UTC() }}
}

// idPattern keeps ids URL-safe and bounded; ids are otherwise opaque.
var idPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

func (s *service) Create(ctx context.Context, nu NewUser) (User, error) {
	u, err := validate(nu)
	if err != nil {
		return User{}, err
	}
	if u.ID == "" {
		u.ID = uuid.Must(uuid.NewV7()).String()
	}
	u.CreatedAt = s.now().Truncate(time.Microsecond)
	if err := s.store.Insert(ctx, u); err != nil {
		return User{}, err
	}
	return u, nil
}

func notFound(id string) error {
	return errs.Newf(errs.NotFound, client.ReasonUserNotFound, "no user %q", id)
}

// errNoID refuses a Lookup or Delete that names no profile.
var errNoID = errs.New(errs.Invalid, client.ReasonInvalidUserID, "the user id is required")

func (s *service) Get(ctx context.Context, id string) (User, error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return User{}, err
	}
	if caller.UserID != id && caller.Role != auth.RoleAdmin {
		return User{}, notFound(id) // not 403: whether id exists is not the caller's business
	}
	return s.Lookup(ctx, id)
}

func (s *service) Me(ctx context.Context) (User, error) {
	caller, err := auth.Require(ctx)
	if err != nil {
		return User{}, err
	}
	return s.Lookup(ctx, caller.UserID)
}

func (s *service) Lookup(ctx context.Context, id string) (User, error) {
	if id == "" {
		return User{}, errNoID
	}
	if !idPattern.MatchString(id) {
		return User{}, notFound(id)
	}
	return s.store.Get(ctx, id)
}

func (s *service) Delete(ctx context.Context, id string) error {
	if id == "" {
		return errNoID
	}
	if !idPattern.MatchString(id) {
		return nil // no such profile can exist
	}
	return s.store.Delete(ctx, id)
}

// validate normalises nu and returns every problem as one 422.
func validate(nu NewUser) (User, error) {
	u := User{
		ID:    strings.TrimSpace(nu.ID),
		Email: strings.ToLower(strings.TrimSpace(nu.Email)),
		Name:  strings.TrimSpace(nu.Name),
		Role:  strings.TrimSpace(nu.Role),
	}
	if u.Role == "" {
		u.Role = RoleCustomer
	}
	problems := map[string]any{}
	if u.ID != "" && !idPattern.MatchString(u.ID) {
		problems["id"] = "must be 1-64 letters, digits, '-' or '_'"
	}
	if addr, err := mail.ParseAddress(u.Email); err != nil || addr.Address != u.Email || len(u.Email) > 254 {
		problems["email"] = "must be a plain email address like ada@example.com"
	}
	if n := utf8.RuneCountInString(u.Name); n == 0 || n > 100 {
		problems["name"] = "must be 1-100 characters"
	}
	if u.Role != RoleCustomer {
		problems["role"] = "must be customer: only an operator grants admin (user grant-admin)"
	}
	if len(problems) > 0 {
		return User{}, errs.New(errs.Validation, client.ReasonInvalidUser, "the user has invalid fields").WithDetails(problems)
	}
	return u, nil
}
