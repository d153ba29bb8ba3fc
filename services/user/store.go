package user

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/user/client"
)

const (
	insertUserSQL = `INSERT INTO users (id, email, name, role, created_at) VALUES (?, ?, ?, ?, ?)`
	getUserSQL    = `SELECT id, email, name, role, created_at FROM users WHERE id = ?`
	emailTakenSQL = `SELECT COUNT(*) FROM users WHERE email = ?`
	deleteUserSQL = `DELETE FROM users WHERE id = ?`
	setRoleSQL    = `UPDATE users SET role = ? WHERE email = ?`
)

// SQLStore is the sqlx Store, on PostgreSQL or SQLite.
type SQLStore struct{ db *sqlx.DB }

// NewStore returns a store over db (migrated with Migrations).
func NewStore(db *sqlx.DB) *SQLStore { return &SQLStore{db: db} }

// Insert adds u; a taken email or id is a Conflict.
func (s *SQLStore) Insert(ctx context.Context, u User) error {
	_, err := s.db.ExecContext(ctx, s.db.Rebind(insertUserSQL), u.ID, u.Email, u.Name, u.Role, u.CreatedAt)
	if sqldb.IsUniqueViolation(err) {
		var n int
		if s.db.GetContext(ctx, &n, s.db.Rebind(emailTakenSQL), u.Email) == nil && n > 0 {
			return errs.New(errs.Conflict, client.ReasonEmailTaken, "a user with this email already exists")
		}
		return errs.Newf(errs.Conflict, client.ReasonUserExists, "user %s already exists", u.ID)
	}
	if err != nil {
		return sqldb.Err("insert user", err)
	}
	return nil
}

// Get returns the user with id.
func (s *SQLStore) Get(ctx context.Context, id string) (User, error) {
	var u User
	err := s.db.GetContext(ctx, &u, s.db.Rebind(getUserSQL), id)
	if errors.Is(err, sql.ErrNoRows) {
		return User{}, notFound(id)
	}
	if err != nil {
		return User{}, sqldb.Err("get user", err)
	}
	u.CreatedAt = u.CreatedAt.UTC()
	return u, nil
}

// SetRole gives the user with email the role: the operator's way to make
// an admin (cmd/user grant-admin), which no API offers.
func (s *SQLStore) SetRole(ctx context.Context, email, role string) error {
	res, err := s.db.ExecContext(ctx, s.db.Rebind(setRoleSQL), role, strings.ToLower(strings.TrimSpace(email)))
	if err != nil {
		return sqldb.Err("set role", err)
	}
	if n, err := res.RowsAffected(); err != nil || n == 0 {
		return errs.Newf(errs.NotFound, client.ReasonUserNotFound, "no user with email %q", email)
	}
	return nil
}

// Delete removes the user with id, if there is one.
func (s *SQLStore) Delete(ctx context.Context, id string) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(deleteUserSQL), id); err != nil {
		return sqldb.Err("delete user", err)
	}
	return nil
}
