// Package user owns user profiles: who a user is (email, name) and what
// they may do (role). Credentials live in auth; profiles are created by it
// through the internal gRPC API.
//
//	HTTP ──▶ kit/auth middleware ──▶ transport_http.go ──┐
//	gRPC (meshop.user.v1.Users) ───▶ transport_grpc.go ──┴▶ endpoints.go ──▶ service.go ──▶ store.go ──▶ DB
//
// Public routes (/users) need a bearer token: a user reads its own profile,
// an admin any. The gRPC API (proto/meshop/user/v1, called through package
// client) serves other services without a token; the edge never routes
// it, so only services inside the mesh reach it.
package user

import (
	"embed"
	"time"

	"github.com/meshop/meshop/services/kit/sqldb"
)

// Migrations are the user database's schema, applied at start.
//
//go:embed migrations/*.sql
var migrations embed.FS

// Migrations returns the user database's schema.
func Migrations() sqldb.MigrationSet {
	return sqldb.Embedded("user", migrations, "migrations")
}

// Roles.
const (
	RoleCustomer = "customer"
	RoleAdmin    = "admin"
)

// User is a profile.
type User struct {
	ID        string    `json:"id" db:"id"`
	Email     string    `json:"email" db:"email"`
	Name      string    `json:"name" db:"name"`
	Role      string    `json:"role" db:"role"`
	CreatedAt time.Time `json:"created_at" db:"created_at"`
}

// NewUser is what creating a profile takes. ID is optional: auth passes the
// id it assigned to the credentials, so both share it.
type NewUser struct {
	ID    string `json:"id"`
	Email string `json:"email"`
	Name  string `json:"name"`
	Role  string `json:"role"`
}
