// Package authtest mints access tokens for tests of services that verify
// them with kit/auth: an Issuer holds an ES256 key, serves its JWKS as an
// auth.KeySource, and signs tokens the way the auth service does.
//
//	iss := authtest.NewIssuer(t)
//	handler := NewHTTPHandler(endpoints, iss.Verifier().Middleware)
//	req.Header.Set("Authorization", "Bearer "+iss.Token(t, "u1", auth.RoleCustomer))
package authtest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshop/meshop/services/kit/auth"
)

// Issuer signs test tokens with one key.
type Issuer struct {
	Kid string
	Key *ecdsa.PrivateKey
}

// NewIssuer returns an issuer with a fresh P-256 key.
func NewIssuer(t testing.TB) *Issuer {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &Issuer{Kid: "test-" + rand.Text()[:8], Key: key}
}

// JWKS serves the issuer's public key (auth.KeySource).
func (i *Issuer) JWKS(context.Context) (auth.JWKS, error) {
	jwk, err := auth.NewJWK(i.Kid, &i.Key.PublicKey)
	if err != nil {
		return auth.JWKS{}, err
	}
	return auth.JWKS{Keys: []auth.JWK{jwk}}, nil
}

// Verifier verifies the issuer's tokens.
func (i *Issuer) Verifier() *auth.Verifier {
	return auth.NewVerifier(i, auth.VerifierConfig{})
}

// Claims are valid claims for user sub with role, expiring in 15 minutes.
func Claims(sub, role string) auth.Claims {
	now := time.Now()
	return auth.Claims{
		Email: sub + "@example.com", Role: role,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: sub, Issuer: auth.Issuer, Audience: jwt.ClaimStrings{auth.Audience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(15 * time.Minute)),
		},
	}
}

// Token is a valid token for user sub with role.
func (i *Issuer) Token(t testing.TB, sub, role string) string {
	t.Helper()
	return i.Sign(t, Claims(sub, role))
}

// Sign signs claims with the issuer's key and kid.
func (i *Issuer) Sign(t testing.TB, claims jwt.Claims) string {
	t.Helper()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = i.Kid
	s, err := tok.SignedString(i.Key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// HeaderIdentity stands in for the token middleware in handler tests: the
// X-Test-User header becomes the caller's identity, with the role from
// X-Test-Role (customer when absent). Requests without it have no identity.
func HeaderIdentity(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user := r.Header.Get("X-Test-User"); user != "" {
			role := r.Header.Get("X-Test-Role")
			if role == "" {
				role = auth.RoleCustomer
			}
			r = r.WithContext(auth.WithIdentity(r.Context(), auth.Identity{UserID: user, Role: role}))
		}
		next.ServeHTTP(w, r)
	})
}
