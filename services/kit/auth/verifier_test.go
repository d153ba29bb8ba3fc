package auth_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/errs"
)

// fakeKeys is a JWKS source whose keys tests change, counting fetches.
type fakeKeys struct {
	mu      sync.Mutex
	issuers []*authtest.Issuer
	extra   []auth.JWK
	err     error
	fetches atomic.Int32
}

func (f *fakeKeys) JWKS(ctx context.Context) (auth.JWKS, error) {
	f.fetches.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return auth.JWKS{}, f.err
	}
	set := auth.JWKS{Keys: append([]auth.JWK(nil), f.extra...)}
	for _, iss := range f.issuers {
		s, _ := iss.JWKS(ctx)
		set.Keys = append(set.Keys, s.Keys...)
	}
	return set, nil
}

func (f *fakeKeys) add(iss *authtest.Issuer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.issuers = append(f.issuers, iss)
}

// clock is a settable time.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

func newVerifier(src auth.KeySource, c *clock) *auth.Verifier {
	return auth.NewVerifier(src, auth.VerifierConfig{Now: c.Now})
}

// unsigned builds a token with the given header and claims and raw
// signature, for attacks the jwt library would refuse to sign.
func unsigned(t *testing.T, header map[string]any, claims any, sig string) string {
	t.Helper()
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding
	return enc.EncodeToString(h) + "." + enc.EncodeToString(c) + "." + sig
}

func TestVerify(t *testing.T) {
	iss := authtest.NewIssuer(t)
	other := authtest.NewIssuer(t)
	forger := &authtest.Issuer{Kid: iss.Kid, Key: other.Key} // the right kid, the wrong key
	now := time.Now()
	claims := func(edit func(*auth.Claims)) auth.Claims {
		c := authtest.Claims("u1", auth.RoleCustomer)
		edit(&c)
		return c
	}
	same := func(*auth.Claims) {}

	// HS256 with the public key's bytes as the HMAC secret: the classic
	// algorithm confusion against verifiers that trust the header's alg.
	pubJWK, _ := auth.NewJWK(iss.Kid, &iss.Key.PublicKey)
	pubBytes, _ := json.Marshal(pubJWK)
	hs := jwt.NewWithClaims(jwt.SigningMethodHS256, authtest.Claims("u1", auth.RoleAdmin))
	hs.Header["kid"] = iss.Kid
	hsToken, err := hs.SignedString(pubBytes)
	if err != nil {
		t.Fatal(err)
	}
	noKid := jwt.NewWithClaims(jwt.SigningMethodES256, authtest.Claims("u1", auth.RoleCustomer))
	noKidToken, _ := noKid.SignedString(iss.Key)
	valid := iss.Token(t, "u1", auth.RoleCustomer)
	parts := strings.Split(valid, ".")

	tests := []struct {
		name     string
		token    string
		wantCode string // "" = valid
	}{
		{"valid", valid, ""},
		{"expired beyond the leeway", iss.Sign(t, claims(func(c *auth.Claims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-time.Minute))
		})), "token_expired"},
		{"expired within the leeway", iss.Sign(t, claims(func(c *auth.Claims) {
			c.ExpiresAt = jwt.NewNumericDate(now.Add(-10 * time.Second))
		})), ""},
		{"no exp", iss.Sign(t, claims(func(c *auth.Claims) { c.ExpiresAt = nil })), "invalid_token"},
		{"issued in the future", iss.Sign(t, claims(func(c *auth.Claims) {
			c.IssuedAt = jwt.NewNumericDate(now.Add(time.Hour))
		})), "invalid_token"},
		{"forged signature", forger.Sign(t, claims(same)), "invalid_token"},
		{"tampered claims", parts[0] + "." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"u2","role":"admin","iss":"meshop-auth","aud":"meshop","exp":9999999999,"iat":1}`)) + "." + parts[2], "invalid_token"},
		{"wrong audience", iss.Sign(t, claims(func(c *auth.Claims) { c.Audience = jwt.ClaimStrings{"other"} })), "invalid_token"},
		{"no audience", iss.Sign(t, claims(func(c *auth.Claims) { c.Audience = nil })), "invalid_token"},
		{"wrong issuer", iss.Sign(t, claims(func(c *auth.Claims) { c.Issuer = "evil" })), "invalid_token"},
		{"no subject", iss.Sign(t, claims(func(c *auth.Claims) { c.Subject = "" })), "invalid_token"},
		{"no role", iss.Sign(t, claims(func(c *auth.Claims) { c.Role = "" })), "invalid_token"},
		{"alg none", unsigned(t, map[string]any{"alg": "none", "typ": "JWT", "kid": iss.Kid}, authtest.Claims("u1", auth.RoleAdmin), ""), "invalid_token"},
		{"alg none with signature", unsigned(t, map[string]any{"alg": "none", "kid": iss.Kid}, authtest.Claims("u1", auth.RoleAdmin), parts[2]), "invalid_token"},
		{"HS256 with the public key as secret", hsToken, "invalid_token"},
		{"RS256 header on an ES256 signature", unsigned(t, map[string]any{"alg": "RS256", "kid": iss.Kid}, authtest.Claims("u1", auth.RoleAdmin), parts[2]), "invalid_token"},
		{"no kid", noKidToken, "invalid_token"},
		{"unknown kid", other.Token(t, "u1", auth.RoleCustomer), "invalid_token"},
		{"garbage", "not.a.token", "invalid_token"},
		{"empty", "", "invalid_token"},
		{"huge", strings.Repeat("a", 9000), "invalid_token"},
	}
	v := iss.Verifier()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := v.Verify(context.Background(), tt.token)
			if tt.wantCode == "" {
				if err != nil {
					t.Fatalf("Verify: %v", err)
				}
				if id.UserID != "u1" || id.Role != auth.RoleCustomer || id.Email != "u1@example.com" || id.Token != tt.token {
					t.Errorf("identity = %+v", id)
				}
				return
			}
			e := errs.As(err)
			if err == nil || e.Kind != errs.Unauthenticated || e.Code != tt.wantCode {
				t.Errorf("Verify = %+v, %v; want 401 %s", id, err, tt.wantCode)
			}
		})
	}
}

func TestUnknownKidRefreshes(t *testing.T) {
	c := &clock{now: time.Now()}
	old, rotated := authtest.NewIssuer(t), authtest.NewIssuer(t)
	keys := &fakeKeys{issuers: []*authtest.Issuer{old}}
	v := newVerifier(keys, c)
	ctx := context.Background()

	if _, err := v.Verify(ctx, old.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, old.Token(t, "u1", auth.RoleCustomer)); err != nil || keys.fetches.Load() != 1 {
		t.Fatalf("second token: err %v, fetches %d, want the cached keys (1 fetch)", err, keys.fetches.Load())
	}

	// auth rotates: the new key appears in its JWKS. A token signed with it
	// makes the verifier fetch again, once the refresh interval allows.
	keys.add(rotated)
	c.Advance(6 * time.Second)
	if _, err := v.Verify(ctx, rotated.Token(t, "u2", auth.RoleAdmin)); err != nil {
		t.Fatalf("token of the rotated key: %v", err)
	}
	if got := keys.fetches.Load(); got != 2 {
		t.Errorf("fetches = %d, want 2", got)
	}
	if _, err := v.Verify(ctx, old.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Errorf("the old key must keep working while it is in the JWKS: %v", err)
	}
}

func TestForgedKidFloodIsRateLimited(t *testing.T) {
	c := &clock{now: time.Now()}
	iss := authtest.NewIssuer(t)
	keys := &fakeKeys{issuers: []*authtest.Issuer{iss}}
	v := newVerifier(keys, c)
	ctx := context.Background()
	if _, err := v.Verify(ctx, iss.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			forged := authtest.NewIssuer(t)
			if _, err := v.Verify(ctx, forged.Token(t, "u1", auth.RoleAdmin)); !errs.Is(err, errs.Unauthenticated) {
				t.Errorf("forged kid: %v, want 401", err)
			}
		})
	}
	wg.Wait()
	if got := keys.fetches.Load(); got != 1 {
		t.Errorf("fetches within the refresh interval = %d, want 1", got)
	}
	c.Advance(6 * time.Second)
	forged := authtest.NewIssuer(t)
	for range 50 {
		_, _ = v.Verify(ctx, forged.Token(t, "u1", auth.RoleAdmin))
	}
	if got := keys.fetches.Load(); got != 2 {
		t.Errorf("fetches after one interval = %d, want 2", got)
	}
}

func TestKeysUnavailable(t *testing.T) {
	c := &clock{now: time.Now()}
	iss := authtest.NewIssuer(t)
	keys := &fakeKeys{err: errs.New(errs.Unavailable, "no_healthy_upstream", "auth has no passing instance")}
	v := newVerifier(keys, c)
	ctx := context.Background()
	_, err := v.Verify(ctx, iss.Token(t, "u1", auth.RoleCustomer))
	if e := errs.As(err); e.Kind != errs.Unavailable || e.Code != "jwks_unavailable" {
		t.Fatalf("auth down, no keys cached: %v, want 503 jwks_unavailable", err)
	}

	// auth comes back; once keys are cached, auth going down again does not
	// stop tokens of known keys even when the cache is stale.
	keys.mu.Lock()
	keys.err, keys.issuers = nil, []*authtest.Issuer{iss}
	keys.mu.Unlock()
	c.Advance(6 * time.Second)
	if _, err := v.Verify(ctx, iss.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Fatal(err)
	}
	keys.mu.Lock()
	keys.err = errors.New("connection refused")
	keys.mu.Unlock()
	c.Advance(10 * time.Minute)
	tok := iss.Sign(t, func() auth.Claims {
		cl := authtest.Claims("u1", auth.RoleCustomer)
		cl.IssuedAt = jwt.NewNumericDate(c.Now())
		cl.ExpiresAt = jwt.NewNumericDate(c.Now().Add(time.Minute))
		return cl
	}())
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Errorf("stale keys with auth down: %v, want the cached key used", err)
	}
}

func TestStaleKeysRefreshInBackground(t *testing.T) {
	c := &clock{now: time.Now()}
	iss, withdrawn := authtest.NewIssuer(t), authtest.NewIssuer(t)
	keys := &fakeKeys{issuers: []*authtest.Issuer{iss, withdrawn}}
	v := newVerifier(keys, c)
	ctx := context.Background()
	if _, err := v.Verify(ctx, withdrawn.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Fatal(err)
	}
	// auth withdraws a key; after MaxKeyAge the next token triggers a
	// refetch, after which the withdrawn key no longer verifies.
	keys.mu.Lock()
	keys.issuers = []*authtest.Issuer{iss}
	keys.mu.Unlock()
	c.Advance(6 * time.Minute)
	fresh := func(i *authtest.Issuer) string {
		cl := authtest.Claims("u1", auth.RoleCustomer)
		cl.IssuedAt = jwt.NewNumericDate(c.Now())
		cl.ExpiresAt = jwt.NewNumericDate(c.Now().Add(time.Minute))
		return i.Sign(t, cl)
	}
	if _, err := v.Verify(ctx, fresh(iss)); err != nil {
		t.Fatal(err)
	}
	deadline := time.After(5 * time.Second)
	for keys.fetches.Load() < 2 {
		select {
		case <-deadline:
			t.Fatal("no background refetch of the stale key set")
		case <-time.After(5 * time.Millisecond):
		}
	}
	for {
		_, err := v.Verify(ctx, fresh(withdrawn))
		if errs.Is(err, errs.Unauthenticated) {
			break
		}
		select {
		case <-deadline:
			t.Fatalf("withdrawn key still verifies: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestJWKSIgnoresUnusableKeys(t *testing.T) {
	iss := authtest.NewIssuer(t)
	good, _ := auth.NewJWK(iss.Kid, &iss.Key.PublicKey)
	offCurve := good
	offCurve.Kid, offCurve.Y = "off-curve", offCurve.X
	rsa := auth.JWK{Kty: "RSA", Kid: "rsa"}
	wrongAlg := good
	wrongAlg.Kid, wrongAlg.Alg = "hs", "HS256"
	keys := &fakeKeys{extra: []auth.JWK{offCurve, rsa, wrongAlg, good}}
	v := auth.NewVerifier(keys, auth.VerifierConfig{})
	if _, err := v.Verify(context.Background(), iss.Token(t, "u1", auth.RoleCustomer)); err != nil {
		t.Fatalf("the good key next to unusable ones: %v", err)
	}
	for _, k := range []auth.JWK{offCurve, rsa, wrongAlg} {
		if _, err := k.PublicKey(); err == nil {
			t.Errorf("JWK %s: PublicKey accepted it", k.Kid)
		}
	}
}

func TestJWKRoundTrip(t *testing.T) {
	for range 20 { // keys whose coordinates have leading zero bytes too
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		jwk, err := auth.NewJWK("k", &key.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := jwk.PublicKey()
		if err != nil || !pub.Equal(&key.PublicKey) {
			t.Fatalf("round trip: %v", err)
		}
	}
}

func TestMiddleware(t *testing.T) {
	iss := authtest.NewIssuer(t)
	handler := iss.Verifier().Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, err := auth.Require(r.Context())
		if err != nil {
			w.WriteHeader(http.StatusTeapot) // reached without identity
			return
		}
		_, _ = w.Write([]byte(id.UserID + " " + id.Role))
	}))
	tests := []struct {
		name       string
		header     string
		wantStatus int
		wantBody   string
	}{
		{"no header passes through without identity", "", http.StatusTeapot, ""},
		{"valid token", "Bearer " + iss.Token(t, "u1", auth.RoleAdmin), 200, "u1 admin"},
		{"lowercase scheme", "bearer " + iss.Token(t, "u1", auth.RoleAdmin), 200, "u1 admin"},
		{"basic auth", "Basic dTE6cHc=", 401, `"invalid_token"`},
		{"no token", "Bearer", 401, `"invalid_token"`},
		{"forged token", "Bearer " + authtest.NewIssuer(t).Token(t, "u1", auth.RoleAdmin), 401, `"invalid_token"`},
		{"alg none", "Bearer " + unsigned(t, map[string]any{"alg": "none", "kid": iss.Kid}, authtest.Claims("u1", auth.RoleAdmin), ""), 401, `"invalid_token"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/x", nil)
			if tt.header != "" {
				req.Header.Set("Authorization", tt.header)
			}
			rec := httptest.NewRecorder()
			handler.ServeHTTP(rec, req)
			if rec.Code != tt.wantStatus || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
			if rec.Code == 401 && (rec.Header().Get("WWW-Authenticate") == "" || rec.Header().Get("Content-Type") != "application/json") {
				t.Errorf("401 headers: %v", rec.Header())
			}
		})
	}
}
