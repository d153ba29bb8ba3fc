package auth

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// testPolicy is the key policy of the keyring tests.
var testPolicy = KeyPolicy{RotationAge: 24 * time.Hour, PublishDelay: 15 * time.Second, TokenTTL: 15 * time.Minute, Leeway: 30 * time.Second}

// newTestKeyring is a keyring with testPolicy over store, on clock c.
func newTestKeyring(store KeyStore, sealer *KeySealer, c *clock) *Keyring {
	return NewKeyring(store, testPolicy, sealer, c.Now, slog.New(slog.DiscardHandler))
}

// testSealer is a sealer under a fresh random key.
func testSealer(t testing.TB) *KeySealer {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	s, err := ParseKeySealer(base64.StdEncoding.EncodeToString(key))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestParseKeySealerRefusesBadKeys(t *testing.T) {
	for _, bad := range []string{"", "not base64!", base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := ParseKeySealer(bad); err == nil || !strings.Contains(err.Error(), "32 random bytes") {
			t.Errorf("ParseKeySealer(%q) = %v, want the 32-byte error", bad, err)
		}
	}
}

// TestSigningKeysAreSealedAtRest checks that the store never holds a
// private key in clear, that a key opens only with its encryption key and
// its own key id, and that a keyring that cannot open the current key
// (another encryption key, or a key stored in clear before sealing) makes
// a new one instead of signing with nothing.
func TestSigningKeysAreSealedAtRest(t *testing.T) {
	ctx := context.Background()
	store := openStore(t, sqliteURL(t), nil)
	c := newClock()
	sealer := testSealer(t)
	ring := newTestKeyring(store, sealer, c)
	if err := ring.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	stored, err := store.SigningKeys(ctx)
	if err != nil || len(stored) != 1 {
		t.Fatalf("stored keys = %d, %v", len(stored), err)
	}
	k := stored[0]
	if strings.Contains(k.PrivateKey, "PRIVATE KEY") || !strings.HasPrefix(k.PrivateKey, sealedPrefix) {
		t.Fatalf("private key stored as %.40q..., want sealed", k.PrivateKey)
	}
	if pem, err := sealer.Open(k.Kid, k.PrivateKey); err != nil || !strings.Contains(pem, "PRIVATE KEY") {
		t.Fatalf("Open = %.20q, %v", pem, err)
	}
	if _, err := sealer.Open("another-kid", k.PrivateKey); err == nil {
		t.Error("a sealed key opened under another key id")
	}
	if _, err := testSealer(t).Open(k.Kid, k.PrivateKey); err == nil {
		t.Error("a sealed key opened with another encryption key")
	}
	if _, err := sealer.Open(k.Kid, "-----BEGIN PRIVATE KEY-----\n"); err == nil {
		t.Error("a key stored in clear opened")
	}

	// Another encryption key: the stored key is unusable here, so a new
	// one is made and signs.
	other := newTestKeyring(store, testSealer(t), c)
	if err := other.Maintain(ctx); err != nil {
		t.Fatal(err)
	}
	if kid, _, err := other.Signing(ctx); err != nil || kid == k.Kid {
		t.Errorf("with another encryption key, signing key = %q, %v; want a new one", kid, err)
	}
}
