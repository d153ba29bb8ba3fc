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
// Every statement is bounded on the server side as well as by its context,
// so a statement the caller forgot to bound, or one waiting on a lock,
// cannot hold a connection (and its transaction) for ever:
//
//	PostgreSQL  statement_timeout, sent in each connection's startup
//	            options: DefaultStatementTimeout (5 s) unless the URL sets
//	            it (postgres://...?statement_timeout=10000, PostgreSQL's
//	            own parameter: milliseconds, or a unit as in '10s'; 0 is
//	            none). A statement over it fails with SQLSTATE 57014
//	            (query_canceled); lock waits count.
//	SQLite      busy_timeout: how long a statement waits for a lock held
//	            by another connection or process, the same 5 s unless the
//	            URL sets it (sqlite:/path/db.sqlite?statement_timeout=10s,
//	            a Go duration or milliseconds). SQLite has no timeout on a
//	            running statement; its context interrupts it.
//
// Migrations run without the statement timeout (a migration, or waiting for
// another instance's, may take longer); the connection gets it back after.
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
	"strconv"
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

// DefaultStatementTimeout bounds each statement where the URL does not
// say otherwise (see the package doc).
const DefaultStatementTimeout = 5 * time.Second

// statementTimeoutParam is the URL query parameter that overrides
// DefaultStatementTimeout, on both engines (PostgreSQL's own name).
const statementTimeoutParam = "statement_timeout"

func parseURL(rawURL string) (driver, dsn string, err error) {
	switch {
	case strings.HasPrefix(rawURL, "postgres://"), strings.HasPrefix(rawURL, "postgresql://"):
		_, query, _ := strings.Cut(rawURL, "?")
		params, err := url.ParseQuery(query)
		if err != nil {
			return "", "", fmt.Errorf("sqldb: %s: bad query: %w", redact(rawURL), err)
		}
		if params.Has(statementTimeoutParam) {
			return "pgx", rawURL, nil // PostgreSQL checks the value itself
		}
		// pgx sends parameters it does not know itself as run-time
		// parameters in the startup message: every connection of the
		// pool, reconnections included, starts with the timeout.
		sep := "?"
		if strings.Contains(rawURL, "?") {
			sep = "&"
		}
		return "pgx", rawURL + sep + statementTimeoutParam + "=" + strconv.FormatInt(DefaultStatementTimeout.Milliseconds(), 10), nil
	case strings.HasPrefix(rawURL, "sqlite:"):
		path, query, _ := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(rawURL, "sqlite:"), "//"), "?")
		if path == "" {
			return "", "", fmt.Errorf("sqldb: %q has no file path (use sqlite:/path/db.sqlite or sqlite::memory:)", rawURL)
		}
		busy, err := sqliteBusyTimeout(query)
		if err != nil {
			return "", "", fmt.Errorf("sqldb: %s: %w", rawURL, err)
		}
		// WAL lets readers run beside the writer; foreign keys are off by
		// default in SQLite and on in PostgreSQL, so turn them on.
		pragmas := "_pragma=busy_timeout(" + strconv.FormatInt(busy.Milliseconds(), 10) + ")&_pragma=foreign_keys(1)&_time_format=sqlite"
		if path != ":memory:" {
			pragmas += "&_pragma=journal_mode(WAL)"
		}
		return "sqlite", "file:" + path + "?" + pragmas, nil
	default:
		return "", "", fmt.Errorf("sqldb: unsupported database URL %q: want postgres://... or sqlite:...", redact(rawURL))
	}
}

// sqliteBusyTimeout reads statement_timeout, the only parameter a sqlite:
// URL takes: a Go duration ("10s") or milliseconds ("10000").
func sqliteBusyTimeout(query string) (time.Duration, error) {
	if query == "" {
		return DefaultStatementTimeout, nil
	}
	params, err := url.ParseQuery(query)
	if err != nil {
		return 0, fmt.Errorf("bad query: %w", err)
	}
	for name := range params {
		if name != statementTimeoutParam {
			return 0, fmt.Errorf("unknown parameter %q (a sqlite: URL takes only %s)", name, statementTimeoutParam)
		}
	}
	raw := params.Get(statementTimeoutParam)
	if ms, err := strconv.ParseInt(raw, 10, 64); err == nil && ms >= 0 {
		return time.Duration(ms) * time.Millisecond, nil
	}
	d, err := time.ParseDuration(raw)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("%s=%q: want a duration (10s) or milliseconds", statementTimeoutParam, raw)
	}
	return d, nil
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
