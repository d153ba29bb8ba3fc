// Package auth owns credentials and access tokens. It registers users
// (creating their profile in the user service, which owns the user's
// role), logs them in with a short-lived ES256 token, and publishes the
// public keys that verify those tokens (JWKS): publicly at GET /auth/jwks,
// and to the other services' kit/auth verifiers over gRPC
// (meshop.auth.v1.Keys; package client is their KeySource).
//
//	HTTP ──────────────────▶ transport_http.go ──┐
//	gRPC (GetKeySet) ──────▶ transport_grpc.go ──┴▶ endpoints.go ──▶ service.go ──┬──▶ store.go ──▶ DB (credentials, signing_keys, outbox)
//	                                                                  │           └──▶ users.go ──▶ userclient ──▶ mesh ──▶ user (gRPC meshop.user.v1.Users)
//	                                                                  ├──▶ keys.go      signing keys: create, rotate, JWKS
//	                                                                  ├──▶ password.go  argon2id
//	                                                                  └──▶ ratelimit.go login token buckets
//
// Registration writes in this order, so a failed profile creation leaves
// neither credentials nor event:
//
//  1. Users.Create on user with the new id: user's unique email
//     settles races between two registrations of one email.
//  2. One transaction: insert the credentials + record user.registered in
//     the outbox. If it fails, the profile is deleted again
//     (Users.Delete, best effort, logged when it fails).
//
// A crash between 1 and 2 leaves a profile without credentials: nobody can
// log in as it and no event announced it; its email answers 409 until an
// operator removes it.
package auth

import (
	"embed"
	"time"

	"github.com/meshop/meshop/services/kit/sqldb"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the auth database's schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("auth", migrations, "migrations")
}

// Credentials are what a login is checked against.
type Credentials struct {
	UserID       string    `db:"user_id"`
	Email        string    `db:"email"`
	PasswordHash string    `db:"password_hash"`
	CreatedAt    time.Time `db:"created_at"`
}

// RegisterRequest is the body of POST /auth/register.
type RegisterRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	Name     string `json:"name"`
}

// LoginRequest is the body of POST /auth/login.
type LoginRequest struct {
	Email    string `json:"email"`
	Password string `json:"password"`
}

// Token is a login's answer.
type Token struct {
	AccessToken string `json:"access_token"`
	TokenType   string `json:"token_type"` // always "Bearer"
	ExpiresIn   int    `json:"expires_in"` // seconds
}

// Profile is the user service's profile, as auth creates and reads it.
type Profile struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Role  string `json:"role,omitempty"`
}

// Registered is the data of the user.registered event.
type Registered struct {
	UserID string `json:"user_id"`
	Email  string `json:"email"`
	Name   string `json:"name"`
}
