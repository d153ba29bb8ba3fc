// Package sqldb opens a service's database with sqlx and applies its
// embedded migrations. The URL chooses the engine:
//
//	postgres://user@host:5432/db?sslmode=disable  → PostgreSQL through pgx
//	sqlite:/path/to/file.db   or   sqlite::memory: → SQLite (pure Go, no cgo)
//
// Both run the same migrations and the same queries: SQL is written with
// "?" placeholders and portable types, and stores pass it through
// (*sqlx.DB).Rebind.
//
// It is also the one way a store does the common things: OpenMigrated
// (open and migrate), InTx (one transaction), Err (a database failure as
// the error a store returns).
package sqldb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // "pgx" driver
	"github.com/jmoiron/sqlx"
	"modernc.org/sqlite" // "sqlite" driver
	sqlite3 "modernc.org/sqlite/lib"
)

// Open connects to the database at rawURL and checks that it answers within
// ctx. The error names the engine and host, never the password.
func Open(ctx context.Context, rawURL string) (*sqlx.DB, error) {
	driver, dsn, err := parseURL(rawURL)
	if err != nil {
		return nil, err
	}
	db, err := sqlx.Open(driver, dsn)
	if err != nil {
		return nil, fmt.Errorf("sqldb: open %s: %w", redact(rawURL), err)
	}
	if driver == "sqlite" {
		// One connection: SQLite has one writer, and ":memory:" is per
		// connection. Serialising here avoids SQLITE_BUSY under load.
		db.SetMaxOpenConns(1)
	} else {
		db.SetMaxOpenConns(20)
		db.SetMaxIdleConns(10)
		db.SetConnMaxIdleTime(5 * time.Minute)
	}
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := db.PingContext(pingCtx); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqldb: cannot reach database %s: %w", redact(rawURL), err)
	}
	return db, nil
}

func parseURL(rawURL string) (driver, dsn string, err error) {
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		return "pgx", rawURL, nil
	case strings.HasPrefix(rawURL, "sqlite:"):
		path := strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "//")
		if path == "" {
			return "", "", fmt.Errorf("sqldb: %q has no file path (use sqlite:/path/db.sqlite or sqlite::memory:)", rawURL)
		}
		// WAL lets readers run beside the writer; foreign keys are off by
		// default in SQLite and on in PostgreSQL, so turn them on.
		pragmas := "_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_time_format=sqlite"
		if path != ":memory:" {
			pragmas += "&_pragma=journal_mode(WAL)"
		}
		return "sqlite", "file:" + path + "?" + pragmas, nil
	default:
		return "", "", fmt.Errorf("sqldb: unsupported database URL %q: want postgres://... or sqlite:...", redact(rawURL))
	}
}

// redact hides the password in a URL for messages.
func redact(rawURL string) string {
	u, err := url.Parse(rawURL)
	if err != nil || u.User == nil {
		return rawURL
	}
	return u.Redacted()
}

// IsUniqueViolation reports whether err is a unique-constraint violation,
// on either engine: the portable way to turn a duplicate insert into a
// Conflict.
func IsUniqueViolation(err error) bool {
	var pg *pgconn.PgError
	if errors.As(err, &pg) {
		return pg.Code == "23505"
	}
	var lite *sqlite.Error
	if errors.As(err, &lite) {
		return lite.Code() == sqlite3.SQLITE_CONSTRAINT_UNIQUE || lite.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	}
	return false
}
