package sqldb

import (
	"context"

	"github.com/jmoiron/sqlx"

	"github.com/meshop/meshop/services/kit/errs"
)

// InTx runs fn in one transaction of db: committed if fn returns nil,
// rolled back if it returns an error (returned as it is) or panics.
// Failures to begin or commit are store errors (see Err).
func InTx(ctx context.Context, db *sqlx.DB, fn func(tx *sqlx.Tx) error) error {
	tx, err := db.BeginTxx(ctx, nil)
	if err != nil {
		return Err("begin", err)
	}
	defer tx.Rollback() // after Commit, a no-op
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return Err("commit", err)
	}
	return nil
}

// Err is the error a store returns when the database fails it: Internal,
// code "db", with op (what the store was doing, e.g. "insert order") as
// message and err as cause. Clients see only "internal error"; the cause
// is logged. A nil err is nil.
func Err(op string, err error) error {
	if err == nil {
		return nil
	}
	return errs.Wrap(errs.Internal, "db", op, err)
}
