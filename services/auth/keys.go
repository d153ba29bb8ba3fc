package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
)

// SigningKey is a key pair of the keyring as stored.
type SigningKey struct {
	Kid        string    `db:"kid"`
	Algorithm  string    `db:"algorithm"`
	PrivateKey string    `db:"private_key"` // PKCS#8 PEM, sealed (KeySealer)
	CreatedAt  time.Time `db:"created_at"`
	// ActiveFrom is when the key starts signing; until then it is only
	// published, so every verifier can learn it before the first token.
	ActiveFrom time.Time `db:"active_from"`
	// RetireAfter is when the key leaves the JWKS: nil while it is the
	// current key; once replaced, the moment the last token it may have
	// signed has expired.
	RetireAfter *time.Time `db:"retire_after"`
}

// KeyStore keeps signing keys.
type KeyStore interface {
	SigningKeys(ctx context.Context) ([]SigningKey, error)
	// RotateKeys, in one transaction, sets retireAfter on every key still
	// current and inserts k.
	RotateKeys(ctx context.Context, k SigningKey, retireAfter time.Time) error
	// DeleteKeysRetiredBefore forgets keys that left the JWKS before t.
	DeleteKeysRetiredBefore(ctx context.Context, t time.Time) error
}

// KeyPolicy says when keys rotate.
type KeyPolicy struct {
	// RotationAge is the age at which the current key is replaced; 0 never
	// rotates.
	RotationAge time.Duration
	// PublishDelay is how long a new key is in the JWKS before it signs;
	// it must exceed the verifiers' kit/auth MinRefreshInterval (5s).
	PublishDelay time.Duration
	// TokenTTL and Leeway bound how long a replaced key must stay
	// published: its last token's lifetime plus the verifiers' clock leeway.
	TokenTTL time.Duration
	Leeway   time.Duration
}

// Keyring holds the signing keys in memory, loaded from the store.
type Keyring struct {
	store  KeyStore
	policy KeyPolicy
	sealer *KeySealer
	now    func() time.Time
	logger *slog.Logger

	mu       sync.RWMutex
	keys     []loadedKey // by ActiveFrom, oldest first
	loadedAt time.Time
}

// reloadEvery bounds how long an instance signs with keys it loaded
// before another instance rotated. It is below the verifiers' 30s leeway,
// so a token signed with a just-replaced key never outlives its
// publication.
const reloadEvery = 10 * time.Second

type loadedKey struct {
	SigningKey
	priv *ecdsa.PrivateKey
	jwk  kitauth.JWK
}

// NewKeyring returns a keyring over store whose private keys sealer
// encrypts at rest; call Maintain before use.
func NewKeyring(store KeyStore, policy KeyPolicy, sealer *KeySealer, now func() time.Time, logger *slog.Logger) *Keyring {
	if now == nil {
		now = func() time.Time { return time.Now().UTC() }
	}
	return &Keyring{store: store, policy: policy, sealer: sealer, now: now, logger: logger.With("component", "keyring")}
}

// Maintain makes the stored keys follow the policy, then loads them: the
// first key is created at once, active immediately; a current key older
// than RotationAge is replaced by one active after PublishDelay; keys past
// their retirement are deleted. Several instances may run it at once: the
// worst case is one extra key, published like the others.
func (k *Keyring) Maintain(ctx context.Context) error {
	stored, err := k.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	now := k.now()
	var current *SigningKey
	for i := range stored {
		s := &stored[i]
		if s.RetireAfter == nil && (current == nil || s.CreatedAt.After(current.CreatedAt)) {
			current = s
		}
	}
	switch {
	case current == nil || !k.usable(*current):
		// No key, or one this instance cannot open (stored in clear, or
		// under another encryption key): a new one signs at once.
		if err := k.rotate(ctx, now, now); err != nil {
			return err
		}
	case k.policy.RotationAge > 0 && now.Sub(current.CreatedAt) >= k.policy.RotationAge:
		if err := k.rotate(ctx, now, now.Add(k.policy.PublishDelay)); err != nil {
			return err
		}
	}
	if err := k.store.DeleteKeysRetiredBefore(ctx, now); err != nil {
		return err
	}
	return k.load(ctx)
}

// rotate creates a key that signs from activeFrom and retires the current
// ones once tokens they sign until then have expired.
func (k *Keyring) rotate(ctx context.Context, now, activeFrom time.Time) error {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("keyring: generate: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return fmt.Errorf("keyring: encode: %w", err)
	}
	kid := now.Format("20060102") + "-" + rand.Text()[:12]
	key := SigningKey{
		Kid: kid, Algorithm: kitauth.Algorithm,
		PrivateKey: k.sealer.Seal(kid, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))),
		CreatedAt:  now, ActiveFrom: activeFrom,
	}
	retireAfter := activeFrom.Add(k.policy.TokenTTL + k.policy.Leeway)
	if err := k.store.RotateKeys(ctx, key, retireAfter); err != nil {
		return err
	}
	k.logger.InfoContext(ctx, "new signing key", "kid", key.Kid, "active_from", activeFrom, "previous_retire_after", retireAfter)
	return nil
}

// load replaces the keys in memory with the stored ones.
func (k *Keyring) load(ctx context.Context) error {
	stored, err := k.store.SigningKeys(ctx)
	if err != nil {
		return err
	}
	keys := make([]loadedKey, 0, len(stored))
	for _, s := range stored {
		lk, err := k.parseKey(s)
		if err != nil {
			k.logger.ErrorContext(ctx, "unusable signing key skipped", "kid", s.Kid, "err", err.Error())
			continue
		}
		keys = append(keys, lk)
	}
	slices.SortStableFunc(keys, func(a, b loadedKey) int {
		if c := a.ActiveFrom.Compare(b.ActiveFrom); c != 0 {
			return c
		}
		return a.CreatedAt.Compare(b.CreatedAt)
	})
	k.mu.Lock()
	k.keys, k.loadedAt = keys, k.now()
	k.mu.Unlock()
	return nil
}

// usable reports whether s can sign here.
func (k *Keyring) usable(s SigningKey) bool {
	_, err := k.parseKey(s)
	return err == nil
}

func (k *Keyring) parseKey(s SigningKey) (loadedKey, error) {
	if s.Algorithm != kitauth.Algorithm {
		return loadedKey{}, fmt.Errorf("algorithm %q", s.Algorithm)
	}
	privatePEM, err := k.sealer.Open(s.Kid, s.PrivateKey)
	if err != nil {
		return loadedKey{}, err
	}
	block, _ := pem.Decode([]byte(privatePEM))
	if block == nil {
		return loadedKey{}, errors.New("not PEM")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return loadedKey{}, err
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return loadedKey{}, errors.New("not an ECDSA key")
	}
	jwk, err := kitauth.NewJWK(s.Kid, &priv.PublicKey)
	if err != nil {
		return loadedKey{}, err
	}
	return loadedKey{SigningKey: s, priv: priv, jwk: jwk}, nil
}

// signing is the newest key that is active and outlives a token issued
// now, if any.
func (k *Keyring) signing(now time.Time) (loadedKey, bool) {
	k.mu.RLock()
	defer k.mu.RUnlock()
	for i := len(k.keys) - 1; i >= 0; i-- {
		key := k.keys[i]
		if key.ActiveFrom.After(now) {
			continue // published, not signing yet
		}
		if key.RetireAfter != nil && now.Add(k.policy.TokenTTL).After(*key.RetireAfter) {
			continue // a token signed now would outlive the key in the JWKS
		}
		return key, true
	}
	return loadedKey{}, false
}

// Signing returns the key to sign a token issued now with. Keys are
// reloaded when they were loaded over reloadEvery ago (another instance
// may have rotated) or none fits.
func (k *Keyring) Signing(ctx context.Context) (kid string, priv *ecdsa.PrivateKey, err error) {
	now := k.now()
	k.mu.RLock()
	stale := now.Sub(k.loadedAt) >= reloadEvery
	k.mu.RUnlock()
	if stale {
		if err := k.load(ctx); err != nil {
			k.logger.WarnContext(ctx, "signing with the keys in memory: loading keys failed", "err", err.Error())
		}
	}
	key, ok := k.signing(now)
	if !ok {
		if err := k.load(ctx); err != nil {
			return "", nil, err
		}
		if key, ok = k.signing(now); !ok {
			return "", nil, errs.New(errs.Unavailable, "no_signing_key", "no signing key is active")
		}
	}
	return key.Kid, key.priv, nil
}

// JWKS is every published key: active, about to be, or replaced but still
// verifying tokens. It is read from the store, so a key another instance
// just created is published at once; the keys in memory answer when the
// store cannot.
func (k *Keyring) JWKS(ctx context.Context) kitauth.JWKS {
	if err := k.load(ctx); err != nil {
		k.logger.WarnContext(ctx, "JWKS from memory: loading keys failed", "err", err.Error())
	}
	now := k.now()
	k.mu.RLock()
	defer k.mu.RUnlock()
	set := kitauth.JWKS{Keys: []kitauth.JWK{}}
	for i := len(k.keys) - 1; i >= 0; i-- { // newest first
		if r := k.keys[i].RetireAfter; r == nil || now.Before(*r) {
			set.Keys = append(set.Keys, k.keys[i].jwk)
		}
	}
	return set
}

// Run is an app.Actor that applies the policy every interval, so a
// long-running service rotates too.
func (k *Keyring) Run(interval time.Duration) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		for {
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(interval):
			}
			if err := k.Maintain(ctx); err != nil && ctx.Err() == nil {
				k.logger.ErrorContext(ctx, "key maintenance failed; retrying next interval", "err", err.Error())
			}
		}
	}
}
