package auth

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/kittest"
	"github.com/meshop/meshop/services/kit/sqldb"
	userclient "github.com/meshop/meshop/services/user/client"
)

// outbox returns the envelopes recorded in the store's outbox.
func outbox(t *testing.T, s *SQLStore) []events.Envelope {
	t.Helper()
	return kittest.Outbox[events.Envelope](t, s.db)
}

func TestRegister(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	id, err := f.svc.Register(ctx, RegisterRequest{Email: "  Ada@Example.COM ", Password: "correct horse", Name: " Ada "})
	if err != nil {
		t.Fatal(err)
	}
	if *f.notified != 1 {
		t.Errorf("relay notified %d times, want 1", *f.notified)
	}
	if diff := cmp.Diff(Profile{ID: id, Email: "ada@example.com", Name: "Ada", Role: kitauth.RoleCustomer}, f.users.profiles[id]); diff != "" {
		t.Errorf("profile (-want +got):\n%s", diff)
	}
	c, err := f.store.Credentials(ctx, "ada@example.com")
	if err != nil || c.UserID != id || c.PasswordHash == "correct horse" {
		t.Errorf("credentials = %+v, %v", c, err)
	}
	evs := outbox(t, f.store)
	if len(evs) != 1 || evs[0].Type != events.UserRegistered || evs[0].Source != "auth" || evs[0].SubjectID != id {
		t.Fatalf("outbox = %+v, want one user.registered", evs)
	}
	var data Registered
	_ = json.Unmarshal(evs[0].Data, &data)
	if diff := cmp.Diff(Registered{UserID: id, Email: "ada@example.com", Name: "Ada"}, data); diff != "" {
		t.Errorf("event data (-want +got):\n%s", diff)
	}

	_, err = f.svc.Register(ctx, RegisterRequest{Email: "ADA@example.com", Password: "another password", Name: "Eve"})
	if e := errs.As(err); e.Kind != errs.Conflict || e.Code != "email_taken" {
		t.Errorf("second registration: %v, want 409 email_taken", err)
	}
	if f.users.count() != 1 || len(outbox(t, f.store)) != 1 || *f.notified != 1 {
		t.Errorf("a refused registration wrote: %d profiles, %d events", f.users.count(), len(outbox(t, f.store)))
	}
}

func TestRegisterValidation(t *testing.T) {
	f := newFixture(t, Config{})
	tests := []struct {
		name  string
		req   RegisterRequest
		field string
	}{
		{"short password", RegisterRequest{Email: "a@b.co", Password: "123456789", Name: "A"}, "password"},
		{"short password in runes", RegisterRequest{Email: "a@b.co", Password: "ééééééééé", Name: "A"}, "password"},
		{"huge password", RegisterRequest{Email: "a@b.co", Password: string(make([]byte, 1025)), Name: "A"}, "password"},
		{"bad email", RegisterRequest{Email: "not-an-email", Password: "long enough!", Name: "A"}, "email"},
		{"email with name", RegisterRequest{Email: "Ada <a@b.co>", Password: "long enough!", Name: "A"}, "email"},
		{"no name", RegisterRequest{Email: "a@b.co", Password: "long enough!", Name: "  "}, "name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := f.svc.Register(context.Background(), tt.req)
			e := errs.As(err)
			if e.Kind != errs.Validation || e.Details[tt.field] == nil {
				t.Errorf("got %v %v, want 422 on %s", err, e.Details, tt.field)
			}
		})
	}
	if f.users.count() != 0 {
		t.Errorf("invalid registrations created profiles")
	}
}

func TestRegisterProfileFailureWritesNothing(t *testing.T) {
	ctx := context.Background()
	for _, tt := range []struct {
		name     string
		err      error
		wantKind errs.Kind
	}{
		{"user down", errs.New(errs.Unavailable, "upstream_timeout", "user did not answer in time"), errs.Unavailable},
		{"email taken in user", errs.New(errs.Conflict, userclient.ReasonEmailTaken, "taken"), errs.Conflict},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, Config{})
			f.users.createErr = tt.err
			_, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"})
			if errs.KindOf(err) != tt.wantKind {
				t.Errorf("err = %v, want kind %v", err, tt.wantKind)
			}
			if taken, _ := f.store.EmailTaken(ctx, "ada@example.com"); taken {
				t.Error("credentials stored although the profile was not created")
			}
			if evs := outbox(t, f.store); len(evs) != 0 {
				t.Errorf("events recorded: %+v", evs)
			}
		})
	}
}

func TestRegisterCredentialsFailureUndoesProfile(t *testing.T) {
	f := newFixture(t, Config{})
	boom := sqldb.Err("insert credentials", errors.New("disk full"))
	svc := New(failingStore{SQLStore: f.store, err: boom}, f.users, f.keys, Config{Hasher: testHasher})
	_, err := svc.Register(context.Background(), RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want the store's", err)
	}
	if f.users.count() != 0 || len(f.users.deleted) != 1 {
		t.Errorf("profile not undone: profiles %v, deleted %v", f.users.profiles, f.users.deleted)
	}
}

// TestRegisterNeverGrantsAdmin: every registration makes a customer; an
// operator grants admin in user (user grant-admin).
func TestRegisterNeverGrantsAdmin(t *testing.T) {
	f := newFixture(t, Config{})
	id, err := f.svc.Register(context.Background(), RegisterRequest{Email: "root@example.com", Password: "correct horse", Name: "Root"})
	if err != nil {
		t.Fatal(err)
	}
	if got := f.users.profiles[id].Role; got != kitauth.RoleCustomer {
		t.Errorf("role = %q, want customer", got)
	}
}

func TestLogin(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{TokenTTL: 10 * time.Minute})
	id, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"})
	if err != nil {
		t.Fatal(err)
	}
	f.users.profiles[id] = Profile{ID: id, Email: "ada@example.com", Name: "Ada", Role: kitauth.RoleAdmin} // promoted in user

	tok, err := f.svc.Login(ctx, LoginRequest{Email: "ADA@example.com ", Password: "correct horse"}, "10.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.TokenType != "Bearer" || tok.ExpiresIn != 600 {
		t.Errorf("token = %+v", tok)
	}
	who, err := f.verifier().Verify(ctx, tok.AccessToken)
	if err != nil {
		t.Fatalf("the token does not verify against the JWKS: %v", err)
	}
	if diff := cmp.Diff(kitauth.Identity{UserID: id, Email: "ada@example.com", Role: kitauth.RoleAdmin, Token: tok.AccessToken}, who); diff != "" {
		t.Errorf("identity (-want +got):\n%s", diff)
	}

	f.clock.Advance(11 * time.Minute)
	if _, err := f.verifier().Verify(ctx, tok.AccessToken); errs.As(err).Code != "token_expired" {
		t.Errorf("after its TTL: %v, want token_expired", err)
	}
}

func TestLoginFailuresLookAlike(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	if _, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
	wrong := errs.As(func() error {
		_, err := f.svc.Login(ctx, LoginRequest{Email: "ada@example.com", Password: "wrong password"}, "a")
		return err
	}())
	unknown := errs.As(func() error {
		_, err := f.svc.Login(ctx, LoginRequest{Email: "nobody@example.com", Password: "correct horse"}, "b")
		return err
	}())
	if wrong.Kind != errs.Unauthenticated || wrong.Code != unknown.Code || wrong.Message != unknown.Message || unknown.Kind != wrong.Kind {
		t.Errorf("wrong password %v and unknown email %v must answer alike", wrong, unknown)
	}
}

func TestLoginUserDown(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	if _, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
	f.users.getErr = errs.New(errs.Unavailable, "no_healthy_upstream", "user has no passing instance")
	if _, err := f.svc.Login(ctx, LoginRequest{Email: "ada@example.com", Password: "correct horse"}, "a"); !errs.Is(err, errs.Unavailable) {
		t.Errorf("err = %v, want 503: the role cannot be known", err)
	}
}

func TestLoginRateLimits(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{
		LoginPerEmail: Rate{Burst: 3, Per: time.Minute},
		LoginPerAddr:  Rate{Burst: 5, Per: time.Minute},
	})
	login := func(email, addr string) error {
		_, err := f.svc.Login(ctx, LoginRequest{Email: email, Password: "wrong password"}, addr)
		return err
	}
	if _, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := login("ada@example.com", "10.0.0.1"); errs.KindOf(err) != errs.Unauthenticated {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	err := login("ADA@example.com", "10.0.0.1")
	if e := errs.As(err); e.Kind != errs.TooManyRequests || e.Details["retry_after_seconds"] != 20 {
		t.Errorf("4th attempt on one email from one address: %v %v, want 429 retry after 20s", err, e.Details)
	}
	// The guesser does not lock the owner out: from the owner's address
	// the right password works.
	if _, err := f.svc.Login(ctx, LoginRequest{Email: "ada@example.com", Password: "correct horse"}, "10.0.0.2"); err != nil {
		t.Errorf("the owner's login from another address: %v", err)
	}
	// One address guessing many emails: its 4th attempt was the 429
	// above, its 5th is the last its own bucket allows.
	if err := login("b@x.co", "10.0.0.1"); errs.KindOf(err) != errs.Unauthenticated {
		t.Fatalf("5th attempt from one address: %v", err)
	}
	if err := login("d@x.co", "10.0.0.1"); !errs.Is(err, errs.TooManyRequests) {
		t.Errorf("6th attempt from one address: %v, want 429", err)
	}
	f.clock.Advance(time.Minute)
	if err := login("ada@example.com", "10.0.0.1"); !errs.Is(err, errs.Unauthenticated) {
		t.Errorf("after the period: %v, want the buckets refilled", err)
	}
}

func TestJWKSServesSigningKey(t *testing.T) {
	f := newFixture(t, Config{})
	set, err := f.svc.JWKS(context.Background())
	if err != nil || len(set.Keys) != 1 {
		t.Fatalf("JWKS = %+v, %v", set, err)
	}
	k := set.Keys[0]
	if k.Kty != "EC" || k.Crv != "P-256" || k.Alg != "ES256" || k.Use != "sig" || k.Kid == "" {
		t.Errorf("key = %+v", k)
	}
	if _, err := k.PublicKey(); err != nil {
		t.Error(err)
	}
}
