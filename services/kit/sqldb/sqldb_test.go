package sqldb

import (
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/meshop/meshop/localenv"
)

func TestMigrateAndRoundTrip(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		ctx := context.Background()
		db, err := Open(ctx, dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		migrations := MigrationSet{Name: "things", FS: os.DirFS("testdata/migrations")}
		for range 2 { // the second run must be a no-op
			if err := Migrate(ctx, db, migrations); err != nil {
				t.Fatal(err)
			}
		}
		var versions []int64
		if err := db.Select(&versions, "SELECT version FROM schema_migrations WHERE set_name = 'things' ORDER BY version"); err != nil {
			t.Fatal(err)
		}
		if len(versions) != 2 || versions[0] != 1 || versions[1] != 2 {
			t.Fatalf("applied versions = %v", versions)
		}
		now := time.Now().UTC().Truncate(time.Microsecond)
		if _, err := db.Exec(db.Rebind("INSERT INTO things (id, n, created_at, label) VALUES (?, ?, ?, ?)"), "a", 7, now, "x"); err != nil {
			t.Fatal(err)
		}
		var got struct {
			ID        string    `db:"id"`
			N         int64     `db:"n"`
			CreatedAt time.Time `db:"created_at"`
			Label     string    `db:"label"`
		}
		if err := db.Get(&got, db.Rebind("SELECT id, n, created_at, label FROM things WHERE id = ?"), "a"); err != nil {
			t.Fatal(err)
		}
		if got.N != 7 || got.Label != "x" || !got.CreatedAt.Equal(now) {
			t.Errorf("round trip: got %+v, want n=7 label=x created_at=%s", got, now)
		}
	})
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct{ url, want string }{
		{"mysql://root@localhost/x", "unsupported database URL"},
		{"sqlite:", "has no file path"},
		{"postgres://meshop:secret@127.0.0.1:1/x?sslmode=disable&connect_timeout=1", "cannot reach database"},
	} {
		_, err := Open(ctx, tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%q) = %v, want %q", tc.url, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("password leaked: %v", err)
		}
	}
}

func TestMigrationNames(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "first.sql"), []byte("SELECT 1"), 0o644)
	if _, err := migrationFiles(os.DirFS(dir)); err == nil || !strings.Contains(err.Error(), "NNN_description.sql") {
		t.Errorf("badly named migration accepted: %v", err)
	}
}

func TestIsUniqueViolation(t *testing.T) {
	localenv.EachDatabase(t, func(t *testing.T, dbURL string) {
		db, err := Open(context.Background(), dbURL)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := Migrate(context.Background(), db, MigrationSet{Name: "things", FS: os.DirFS("testdata/migrations")}); err != nil {
			t.Fatal(err)
		}
		insert := db.Rebind("INSERT INTO things (id, n, created_at) VALUES (?, 1, ?)")
		if _, err := db.Exec(insert, "dup", time.Now().UTC()); err != nil {
			t.Fatal(err)
		}
		_, err = db.Exec(insert, "dup", time.Now().UTC())
		if !IsUniqueViolation(err) {
			t.Errorf("duplicate key error %v not recognised", err)
		}
		_, err = db.Exec("INSERT INTO nowhere VALUES (1)")
		if err == nil || IsUniqueViolation(err) {
			t.Errorf("other error %v taken for a unique violation", err)
		}
	})
}

func TestParseURLStatementTimeout(t *testing.T) {
	tests := []struct {
		name, url, wantDSN, wantErr string
	}{
		{"postgres default", "postgres://u@h:5432/d?sslmode=disable", "postgres://u@h:5432/d?sslmode=disable&statement_timeout=5000", ""},
		{"postgres without query", "postgresql://u@h/d", "postgresql://u@h/d?statement_timeout=5000", ""},
		{"postgres own value kept", "postgres://u@h/d?statement_timeout=1min", "postgres://u@h/d?statement_timeout=1min", ""},
		{"sqlite default", "sqlite:/x/db.sqlite", "file:/x/db.sqlite?_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_time_format=sqlite&_pragma=journal_mode(WAL)", ""},
		{"sqlite duration", "sqlite::memory:?statement_timeout=250ms", "file::memory:?_pragma=busy_timeout(250)&_pragma=foreign_keys(1)&_time_format=sqlite", ""},
		{"sqlite milliseconds", "sqlite:/x/db?statement_timeout=1500", "file:/x/db?_pragma=busy_timeout(1500)&_pragma=foreign_keys(1)&_time_format=sqlite&_pragma=journal_mode(WAL)", ""},
		{"sqlite bad value", "sqlite:/x/db?statement_timeout=soon", "", "want a duration"},
		{"sqlite unknown parameter", "sqlite:/x/db?mode=ro", "", `unknown parameter "mode"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, got, err := parseURL(tt.url)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.wantDSN {
				t.Errorf("dsn = %q, %v; want %q", got, err, tt.wantDSN)
			}
		})
	}
}

func TestSQLiteBusyTimeout(t *testing.T) {
	for _, tt := range []struct {
		query string
		want  int
	}{{"", 5000}, {"?statement_timeout=1s", 1000}} {
		db, err := Open(context.Background(), "sqlite:"+filepath.Join(t.TempDir(), "db.sqlite")+tt.query)
		if err != nil {
			t.Fatal(err)
		}
		var got int
		if err := db.Get(&got, "PRAGMA busy_timeout"); err != nil || got != tt.want {
			t.Errorf("busy_timeout with %q = %d (%v), want %d", tt.query, got, err, tt.want)
		}
		db.Close()
	}
}

// withParam adds name=value to a postgres:// URL.
func withParam(t *testing.T, rawURL, name, value string) string {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set(name, value)
	u.RawQuery = q.Encode()
	return u.String()
}

func TestPostgresStatementTimeout(t *testing.T) {
	base := localenv.PostgresT(t)
	ctx := context.Background()

	t.Run("every connection has the default", func(t *testing.T) {
		db, err := Open(ctx, base)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		var got string
		if err := db.Get(&got, "SHOW statement_timeout"); err != nil || got != "5s" {
			t.Errorf("statement_timeout = %q (%v), want 5s", got, err)
		}
	})

	db, err := Open(ctx, withParam(t, base, "statement_timeout", "1000"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1) // the migration's connection is the one used after it

	t.Run("a statement over it fails", func(t *testing.T) {
		start := time.Now()
		_, err := db.ExecContext(ctx, "SELECT pg_sleep(10)")
		took := time.Since(start)
		var pg *pgconn.PgError
		if !errors.As(err, &pg) || pg.Code != "57014" {
			t.Fatalf("pg_sleep(10) = %v, want SQLSTATE 57014 (query_canceled)", err)
		}
		if took < 900*time.Millisecond || took > 3*time.Second {
			t.Errorf("pg_sleep(10) failed after %s, want about 1s", took)
		}
	})

	t.Run("migrations are not cut, and the timeout is back after them", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "001_slow.sql"), []byte("SELECT pg_sleep(1.5)"), 0o644)
		if err := Migrate(ctx, db, MigrationSet{Name: "slow", FS: os.DirFS(dir)}); err != nil {
			t.Fatalf("a 1.5s migration under a 1s statement timeout: %v", err)
		}
		var got string
		if err := db.Get(&got, "SHOW statement_timeout"); err != nil || got != "1s" {
			t.Errorf("statement_timeout after migrating = %q (%v), want 1s", got, err)
		}
	})
}
