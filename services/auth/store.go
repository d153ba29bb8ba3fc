package auth

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jmoiron/sqlx"

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
	db     *sqlx.DB
	outbox *events.Outbox
}

// NewStore returns a store over db (migrated with Migrations and
// events.Migrations) that records its events through outbox.
func NewStore(db *sqlx.DB, outbox *events.Outbox) *SQLStore {
	return &SQLStore{db: db, outbox: outbox}
}

// InsertCredentials stores c and records ev in the outbox, in one
// transaction: the event exists if and only if the credentials do. A taken
// email is a Conflict.
func (s *SQLStore) InsertCredentials(ctx context.Context, c Credentials, ev events.Envelope) error {
	return s.outbox.InTx(ctx, s.db, func(tx *events.Tx) error {
		_, err := tx.ExecContext(ctx, tx.Rebind(insertCredentialsSQL), c.UserID, c.Email, c.PasswordHash, c.CreatedAt)
		if sqldb.IsUniqueViolation(err) {
			return errs.New(errs.Conflict, "email_taken", "an account with this email already exists")
		}
		if err != nil {
			return sqldb.Err("insert credentials", err)
		}
		if err := tx.Record(ctx, ev); err != nil {
			return sqldb.Err("record event", err)
		}
		return nil
	})
}

// Credentials returns the credentials of email (normalised).
func (s *SQLStore) Credentials(ctx context.Context, email string) (Credentials, error) {
	var c Credentials
	err := s.db.GetContext(ctx, &c, s.db.Rebind(credentialsSQL), email)
	if errors.Is(err, sql.ErrNoRows) {
		return Credentials{}, errs.New(errs.NotFound, "no_credentials", "no credentials for this email")
	}
	if err != nil {
		return Credentials{}, sqldb.Err("get credentials", err)
	}
	c.CreatedAt = c.CreatedAt.UTC()
	return c, nil
}

// EmailTaken reports whether email has credentials.
func (s *SQLStore) EmailTaken(ctx context.Context, email string) (bool, error) {
	var n int
	if err := s.db.GetContext(ctx, &n, s.db.Rebind(emailCountSQL), email); err != nil {
		return false, sqldb.Err("count credentials", err)
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
	return sqldb.InTx(ctx, s.db, func(tx *sqlx.Tx) error {
		if _, err := tx.ExecContext(ctx, tx.Rebind(retireKeysSQL), retireAfter); err != nil {
			return fmt.Errorf("auth store: retire keys: %w", err)
		}
		if _, err := tx.ExecContext(ctx, tx.Rebind(insertKeySQL), k.Kid, k.Algorithm, k.PrivateKey, k.CreatedAt, k.ActiveFrom); err != nil {
			return fmt.Errorf("auth store: insert key: %w", err)
		}
		return nil
	})
}

// DeleteKeysRetiredBefore deletes keys whose retirement passed before t.
func (s *SQLStore) DeleteKeysRetiredBefore(ctx context.Context, t time.Time) error {
	if _, err := s.db.ExecContext(ctx, s.db.Rebind(deleteRetiredSQL), t); err != nil {
		return fmt.Errorf("auth store: delete retired keys: %w", err)
	}
	return nil
}
