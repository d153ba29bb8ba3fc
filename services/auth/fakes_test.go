package auth

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/propagation"

	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	userclient "github.com/meshop/meshop/services/user/client"
)

// fakeUsers is the user service in memory; createErr and getErr make it fail.
type fakeUsers struct {
	mu        sync.Mutex
	profiles  map[string]Profile
	createErr error
	getErr    error
	deleted   []string
}

func newFakeUsers() *fakeUsers { return &fakeUsers{profiles: map[string]Profile{}} }

func (f *fakeUsers) Create(_ context.Context, p Profile) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return f.createErr
	}
	for _, q := range f.profiles {
		if q.Email == p.Email {
			return errs.New(errs.Conflict, userclient.ReasonEmailTaken, "a user with this email already exists")
		}
	}
	f.profiles[p.ID] = p
	return nil
}

func (f *fakeUsers) Delete(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.profiles, id)
	f.deleted = append(f.deleted, id)
	return nil
}

func (f *fakeUsers) Get(_ context.Context, id string) (Profile, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.getErr != nil {
		return Profile{}, f.getErr
	}
	p, ok := f.profiles[id]
	if !ok {
		return Profile{}, errs.New(errs.NotFound, userclient.ReasonUserNotFound, "no user")
	}
	return p, nil
}

func (f *fakeUsers) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.profiles)
}

// failingStore fails InsertCredentials after the real store is checked.
type failingStore struct {
	*SQLStore
	err error
}

func (s failingStore) InsertCredentials(context.Context, Credentials, events.Envelope) error {
	return s.err
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func newClock() *clock { return &clock{now: time.Now().UTC().Truncate(time.Second)} }

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// openStore returns a store over a fresh database; notify, when not nil,
// stands in for the relay's Notify.
func openStore(t *testing.T, databaseURL string, notify func()) *SQLStore {
	db := kittest.DB(t, databaseURL, Migrations(), events.Migrations())
	return NewStore(db, events.NewOutbox(propagation.TraceContext{}, notify))
}

func sqliteURL(t *testing.T) string {
	return "sqlite:" + filepath.Join(t.TempDir(), "auth.db")
}

// testHasher is cheap: tests hash many passwords.
var testHasher = NewHasher(64, 1, 1)

// fixture is a service over a SQLite store, fake users and a real keyring.
type fixture struct {
	svc   Service
	store *SQLStore
	users *fakeUsers
	keys  *Keyring
	clock *clock
	// notified counts the relay nudges of the store's outbox.
	notified *int
}

func newFixture(t *testing.T, cfg Config) fixture {
	t.Helper()
	f := fixture{users: newFakeUsers(), clock: newClock(), notified: new(int)}
	f.store = openStore(t, sqliteURL(t), func() { *f.notified++ })
	f.keys = newTestKeyring(f.store, testSealer(t), f.clock)
	if err := f.keys.Maintain(context.Background()); err != nil {
		t.Fatal(err)
	}
	if cfg.Hasher == nil {
		cfg.Hasher = testHasher
	}
	cfg.Now = f.clock.Now
	var store Store = f.store
	f.svc = New(store, f.users, f.keys, cfg)
	return f
}

// verifier checks tokens against the fixture's own JWKS, as other
// services do through the mesh.
func (f fixture) verifier() *kitauth.Verifier {
	return kitauth.NewVerifier(kitauth.KeySourceFunc(func(ctx context.Context) (kitauth.JWKS, error) {
		return f.keys.JWKS(ctx), nil
	}), kitauth.VerifierConfig{Now: f.clock.Now})
}
