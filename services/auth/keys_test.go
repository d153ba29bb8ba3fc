package auth

import (
	"context"
	"testing"
	"time"

	kitauth "github.com/meshop/meshop/services/kit/auth"
)

func kids(set kitauth.JWKS) []string {
	var out []string
	for _, k := range set.Keys {
		out = append(out, k.Kid)
	}
	return out
}

func TestKeyRotation(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, sqliteURL(t), nil)
	c := newClock()
	sealer := testSealer(t)
	ring := newTestKeyring(store, sealer, c)

	// First start: one key, signing at once.
	if err := ring.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	first, _, err := ring.Signing(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := kids(ring.JWKS(ctx)); len(got) != 1 || got[0] != first {
		t.Fatalf("JWKS = %v, want [%s]", got, first)
	}

	// A restart before the rotation age keeps the key, also in a new
	// keyring (the key is persisted).
	c.Advance(time.Hour)
	restarted := newTestKeyring(store, sealer, c)
	if err := restarted.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if kid, _, _ := restarted.Signing(ctx); kid != first {
		t.Fatalf("after restart the signing key is %s, want %s", kid, first)
	}

	// Past the rotation age: a new key is published at once, but the old
	// one signs until the publish delay has passed.
	c.Advance(24 * time.Hour)
	if err := ring.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	published := kids(ring.JWKS(ctx))
	if len(published) != 2 || published[1] != first {
		t.Fatalf("JWKS after rotation = %v, want [new, %s]", published, first)
	}
	second := published[0]
	if kid, _, _ := ring.Signing(ctx); kid != first {
		t.Errorf("signing during the publish delay with %s, want the old %s", kid, first)
	}
	c.Advance(16 * time.Second)
	if kid, _, _ := ring.Signing(ctx); kid != second {
		t.Errorf("signing after the publish delay with %s, want the new %s", kid, second)
	}
	// Another instance that has not reloaded picks the new key up as soon
	// as its old one could not cover a token's lifetime.
	if kid, _, _ := restarted.Signing(ctx); kid != second {
		t.Errorf("second instance signs with %s, want %s", kid, second)
	}

	// The old key stays published until its last token expired.
	c.Advance(14 * time.Minute)
	if err := ring.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kids(ring.JWKS(ctx)); len(got) != 2 {
		t.Errorf("JWKS while old tokens live = %v, want both keys", got)
	}
	c.Advance(2 * time.Minute)
	if err := ring.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if got := kids(ring.JWKS(ctx)); len(got) != 1 || got[0] != second {
		t.Errorf("JWKS after the old tokens expired = %v, want [%s]", got, second)
	}
	stored, _ := store.SigningKeys(ctx)
	if len(stored) != 1 {
		t.Errorf("stored keys = %d, want the retired one deleted", len(stored))
	}
}

func TestRotationKeepsTokensValid(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, Config{})
	if _, err := f.svc.Register(ctx, RegisterRequest{Email: "ada@example.com", Password: "correct horse", Name: "Ada"}); err != nil {
		t.Fatal(err)
	}
	login := func() string {
		tok, err := f.svc.Login(ctx, LoginRequest{Email: "ada@example.com", Password: "correct horse"}, "a")
		if err != nil {
			t.Fatal(err)
		}
		return tok.AccessToken
	}
	v := f.verifier()
	f.clock.Advance(24*time.Hour - 5*time.Minute)
	before := login()
	if _, err := v.Verify(ctx, before); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(6 * time.Minute)
	if err := f.keys.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(20 * time.Second)
	after := login()
	for name, tok := range map[string]string{"before rotation": before, "after rotation": after} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Errorf("token signed %s: %v", name, err)
		}
	}
}
