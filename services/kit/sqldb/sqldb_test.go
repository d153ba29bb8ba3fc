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
