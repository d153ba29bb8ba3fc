package sqldb

import (
	"context"
	"database/sql/driver"
	"fmt"
	"io/fs"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jmoiron/sqlx"
)

// MigrationSet is a named group of migrations: a service's own schema, or
// the tables a kit package keeps in the service's database (the events
// outbox). Versions are numbered per set.
type MigrationSet struct {
	Name string
	FS   fs.FS // NNN_description.sql files at its root
}

// Migrate applies, set by set, the *.sql files not yet recorded in
// schema_migrations, in order, each in its own transaction with its record.
// On PostgreSQL an advisory lock keeps two instances starting at once from
// applying the same migration twice.
func Migrate(ctx context.Context, db *sqlx.DB, sets ...MigrationSet) error {
	conn, err := db.Connx(ctx)
	if err != nil {
		return fmt.Errorf("sqldb: migrate: %w", err)
	}
	defer conn.Close()
	if db.DriverName() == "pgx" {
		// A migration, or waiting for another instance's, may take longer
		// than a statement may: ctx bounds them instead. The connection
		// goes back to the pool with the timeout it was opened with, or
		// not at all.
		if _, err := conn.ExecContext(ctx, "SET statement_timeout = 0"); err != nil {
			return fmt.Errorf("sqldb: migrate: %w", err)
		}
		defer func() {
			if _, err := conn.ExecContext(context.WithoutCancel(ctx), "RESET statement_timeout"); err != nil {
				_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			}
		}()
		const lockID = 7_283_146_001 // any constant shared by all Meshop services
		if _, err := conn.ExecContext(ctx, "SELECT pg_advisory_lock($1)", lockID); err != nil {
			return fmt.Errorf("sqldb: migrate: lock: %w", err)
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "SELECT pg_advisory_unlock($1)", lockID)
	}
	if _, err := conn.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		set_name TEXT NOT NULL, version BIGINT NOT NULL, name TEXT NOT NULL, applied_at TIMESTAMP NOT NULL,
		PRIMARY KEY (set_name, version))`); err != nil {
		return fmt.Errorf("sqldb: migrate: %w", err)
	}
	for _, set := range sets {
		if err := migrateSet(ctx, db, conn, set); err != nil {
			return err
		}
	}
	return nil
}

func migrateSet(ctx context.Context, db *sqlx.DB, conn *sqlx.Conn, set MigrationSet) error {
	files, err := migrationFiles(set.FS)
	if err != nil {
		return err
	}
	var applied []int64
	if err := sqlx.SelectContext(ctx, conn, &applied, db.Rebind("SELECT version FROM schema_migrations WHERE set_name = ?"), set.Name); err != nil {
		return fmt.Errorf("sqldb: migrate: %w", err)
	}
	for _, m := range files {
		if slices.Contains(applied, m.version) {
			continue
		}
		body, err := fs.ReadFile(set.FS, m.file)
		if err != nil {
			return fmt.Errorf("sqldb: migrate: %w", err)
		}
		tx, err := conn.BeginTxx(ctx, nil)
		if err != nil {
			return fmt.Errorf("sqldb: migrate: %w", err)
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqldb: migration %s/%s failed: %w", set.Name, m.file, err)
		}
		if _, err := tx.ExecContext(ctx, db.Rebind("INSERT INTO schema_migrations (set_name, version, name, applied_at) VALUES (?, ?, ?, ?)"),
			set.Name, m.version, m.file, time.Now().UTC()); err != nil {
			tx.Rollback()
			return fmt.Errorf("sqldb: migration %s: record: %w", m.file, err)
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("sqldb: migration %s: commit: %w", m.file, err)
		}
	}
	return nil
}

type migration struct {
	version int64
	file    string
}

func migrationFiles(fsys fs.FS) ([]migration, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("sqldb: migrations: %w", err)
	}
	var out []migration
	for _, name := range names {
		prefix, _, ok := strings.Cut(path.Base(name), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if !ok || err != nil {
			return nil, fmt.Errorf("sqldb: migration %q must be named NNN_description.sql", name)
		}
		out = append(out, migration{v, name})
	}
	slices.SortFunc(out, func(a, b migration) int { return int(a.version - b.version) })
	for i := 1; i < len(out); i++ {
		if out[i].version == out[i-1].version {
			return nil, fmt.Errorf("sqldb: migrations %s and %s share version %d", out[i-1].file, out[i].file, out[i].version)
		}
	}
	return out, nil
}

// OpenMigrated opens the database at rawURL (see Open) and applies sets
// (see Migrate): how a service, or a test, gets its database ready. On
// failure nothing is left open.
func OpenMigrated(ctx context.Context, rawURL string, sets ...MigrationSet) (*sqlx.DB, error) {
	db, err := Open(ctx, rawURL)
	if err != nil {
		return nil, err
	}
	if err := Migrate(ctx, db, sets...); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Embedded is the migration set name whose files are in dir of fsys (an
// embed.FS holding dir/*.sql). A bad dir is a programming error caught by
// the first test run, so it panics.
func Embedded(name string, fsys fs.FS, dir string) MigrationSet {
	sub, err := fs.Sub(fsys, dir)
	if err != nil {
		panic(fmt.Sprintf("sqldb: migrations %s: %v", name, err))
	}
	return MigrationSet{Name: name, FS: sub}
}
