package sqldb

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/localenv"
)

// engines are the databases every store suite runs against: SQLite always,
// PostgreSQL when TEST_POSTGRES_URL is set.
func engines(t *testing.T) map[string]func(t *testing.T) string {
	return map[string]func(t *testing.T) string{
		"sqlite":   func(t *testing.T) string { return "sqlite:" + filepath.Join(t.TempDir(), "test.db") },
		"postgres": func(t *testing.T) string { return localenv.PostgresT(t) },
	}
}

func TestMigrateAndRoundTrip(t *testing.T) {
	for name, dbURL := range engines(t) {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			db, err := Open(ctx, dbURL(t))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			migrations := os.DirFS("testdata/migrations")
			for range 2 { // the second run must be a no-op
				if err := Migrate(ctx, db, migrations); err != nil {
					t.Fatal(err)
				}
			}
			var versions []int64
			if err := db.Select(&versions, "SELECT version FROM schema_migrations ORDER BY version"); err != nil {
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
