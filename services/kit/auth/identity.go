// Package auth verifies the bearer tokens that the auth service issues and
// carries the caller's identity through a request's context.
package auth

import (
	"context"

	"github.com/meshop/meshop/services/kit/errs"
)

// Roles.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// Identity is who is calling, from a verified access token.
type Identity struct {
	UserID string // the token's sub
	Email  string
	Role   string
	Token  string // the raw bearer token, to forward to upstream services
}

type identityKey struct{}

// WithIdentity returns ctx carrying id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, identityKey{}, id)
}

// FromContext returns the caller's identity, if the request had a valid token.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// Require returns the caller's identity or an Unauthenticated error.
func Require(ctx context.Context) (Identity, error) {
	id, ok := FromContext(ctx)
	if !ok {
		return Identity{}, errs.New(errs.Unauthenticated, "unauthenticated", "a valid bearer token is required")
	}
	return id, nil
}

// RequireRole returns the caller's identity if it has role, Forbidden if it
// has not, Unauthenticated without a token.
func RequireRole(ctx context.Context, role string) (Identity, error) {
	id, err := Require(ctx)
	if err != nil {
		return Identity{}, err
	}
	if id.Role != role {
		return Identity{}, errs.Newf(errs.Forbidden, "forbidden", "this needs role %s", role)
	}
	return id, nil
}
