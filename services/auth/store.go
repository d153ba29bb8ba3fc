package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"
	"go.opentelemetry.io/otel/propagation"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/sqldb"
)

const (
	insertCredentialsSQL = `INSERT INTO credentials (user_id, email, password_hash, created_at) VALUES (?, ?, ?, ?)`
	credentialsSQL       = `SELECT user_id, email, password_hash, created_at FROM credentials WHERE email = ?`
	emailCountSQL        = `SELECT COUNT(*) FROM credentials WHERE email = ?`

	signingKeysSQL   = `SELECT kid, algorithm, private_key, created_at, active_from, retire_after FROM signing_keys`
	retireKeysSQL    = `UPDATE signing_keys SET retire_after = ? WHERE retire_after IS NULL`
	insertKeySQL     = `INSERT INTO signing_keys (kid, algorithm, private_key, created_at, active_from) VALUES (?, ?, ?, ?, ?)`
	deleteRetiredSQL = `DELETE FROM signing_keys WHERE retire_after IS NOT NULL AND retire_after < ?`
)

// SQLStore is the sqlx store of credentials and signing keys, on
// PostgreSQL or SQLite.
type SQLStore struct {
	db   *sqlx.DB
	prop propagation.TextMapPropagator
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations). prop carries the trace context into outbox events.
func NewStore(db *sqlx.DB, prop propagation.TextMapPropagator) *SQLStore {
	return &SQLStore{db: db, prop: prop}
}

// InsertCredentials stores c and records ev in the outbox, in one
// transaction: the event exists if and only if the credentials do. A taken
// email is a Conflict.
func (s *SQLStore) InsertCredentials(ctx context.Context, c Credentials, ev events.Envelope) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return errs.Wrap(errs.Internal, "db", "begin", err)
	}
	defer tx.Rollback() // no-op after Commit
	_, err = tx.ExecContext(ctx, tx.Rebind(insertCredentialsSQL), c.UserID, c.Email, c.PasswordHash, c.CreatedAt)
	if sqldb.IsUniqueViolation(err) {
		return errs.New(errs.Conflict, "email_taken", "an account with this email already exists")
	}
	if err != nil {
		return errs.Wrap(errs.Internal, "db", "insert credentials", err)
	}
	if err := events.Record(ctx, tx, s.prop, ev); err != nil {
		return errs.Wrap(errs.Internal, "db", "record event", err)
	}
	if err := tx.Commit(); err != nil {
		return errs.Wrap(errs.Internal, "db", "commit credentials", err)
	}
	return nil
}

// Credentials returns the credentials of email (normalised).
func (s *SQLStore) Credentials(ctx context.Context, email string) (Credentials, error) {
	var c Credentials
	err := s.db.GetContext(ctx, &c, s.db.Rebind(credentialsSQL), email)
	if errors.Is(err, sql.ErrNoRows) {
		return Credentials{}, errs.New(errs.NotFound, "no_credentials", "no credentials for this email")
	}
	if err != nil {
		return Credentials{}, errs.Wrap(errs.Internal, "db", "get credentials", err)
	}
	c.CreatedAt = c.CreatedAt.UTC()
	return c, nil
}

// EmailTaken reports whether email has credentials.
func (s *SQLStore) EmailTaken(ctx context.Context, email string) (bool, error) {
	var n int
	if err := s.db.GetContext(ctx, &n, s.db.Rebind(emailCountSQL), email); err != nil {
		return false, errs.Wrap(errs.Internal, "db", "count credentials", err)
	}
	return n > 0, nil
}

// SigningKeys returns every stored key.
func (s *SQLStore) SigningKeys(ctx context.Context) ([]SigningKey, error) {
	var keys []SigningKey
	if err := s.db.SelectContext(ctx, &keys, signingKeysSQL); err != nil {
		return nil, fmt.Errorf("auth store: signing keys: %w", err)
	}
	for i := range keys {
		k := &keys[i]
		k.CreatedAt, k.ActiveFrom = k.CreatedAt.UTC(), k.ActiveFrom.UTC()
		if k.RetireAfter != nil {
			t := k.RetireAfter.UTC()
			k.RetireAfter = &t
		}
	}
	return keys, nil
}

// RotateKeys retires the current keys after retireAfter and inserts k, in
// one transaction.
func (s *SQLStore) RotateKeys(ctx context.Context, k SigningKey, retireAfter time.Time) error {
	tx, err := s.db.BeginTxx(ctx, nil)
	if err != nil {
		return fmt.Errorf("auth store: rotate: %w", err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, tx.Rebind(retireKeysSQL), retireAfter); err != nil {
		return fmt.Errorf("auth store: retire keys: %w", err)
	}
	if _, err := tx.ExecContext(ctx, tx.Rebind(insertKeySQL), k.Kid, k.Algorithm, k.PrivateKey, k.CreatedAt, k.ActiveFrom); err != nil {
		return fmt.Errorf("auth store: insert key: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("auth store: rotate: %w", err)
	}
	return nil
}

// DeleteKeysRetiredBefore deletes keys whose retirement passed before t.
func (s *SQLStore) DeleteKeysRetiredBefore(ctx context.Context, t time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(deleteRetiredSQL), t); err != nil {
		return fmt.Errorf("auth store: delete retired keys: %w", err)
	}
	return nil
}
