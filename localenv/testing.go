package localenv

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// ConsulT starts a Consul agent on free ports for the test and stops it at
// the end. It fails the test when the agent cannot start.
func ConsulT(t testing.TB) *Consul {
	t.Helper()
	opts, err := newConsulOptions(t.TempDir(), true)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := StartConsul(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := c.Stop(10 * time.Second); err != nil {
			t.Log(err)
		}
		if t.Failed() {
			t.Logf("consul log (tail):\n%s", c.Tail(4000))
		}
	})
	return c
}

// EachDatabase runs test once per database engine, as a subtest named after
// it: SQLite (a file in a temp dir) always, PostgreSQL (a fresh database)
// when TEST_POSTGRES_URL is set, skipped with the reason otherwise.
func EachDatabase(t *testing.T, test func(t *testing.T, databaseURL string)) {
	t.Run("sqlite", func(t *testing.T) { test(t, "sqlite:"+filepath.Join(t.TempDir(), "store.db")) })
	t.Run("postgres", func(t *testing.T) { test(t, PostgresT(t)) })
}

// NATST starts an embedded NATS server with JetStream on a free port, its
// store in a temp dir, and shuts it down when the test ends. Connect with
// AdminURL, or ServiceURL(svc) to act as a service.
func NATST(t testing.TB) *NATS {
	t.Helper()
	n, err := StartNATS(NATSOptions{Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(n.Shutdown)
	return n
}
