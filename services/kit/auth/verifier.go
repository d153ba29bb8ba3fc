package auth

import (
	"context"
	"crypto/ecdsa"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/httpserver"
)

// Claims are the claims of an access token: sub, email, role, exp, iat,
// iss, aud (and jti).
type Claims struct {
	Email string `json:"email"`
	Role  string `json:"role"`
	jwt.RegisteredClaims
}

// VerifierConfig tunes a Verifier; the zero value is the production
// setting.
type VerifierConfig struct {
	Issuer   string        // [Issuer]
	Audience string        // [Audience]
	Leeway   time.Duration // [30s]: clock skew allowed on exp and iat
	// MinRefreshInterval [5s] is the least time between two JWKS fetches,
	// so a flood of tokens with made-up kids costs auth one request per
	// interval, not one per token. The auth service publishes a new key
	// longer than this before it signs with it.
	MinRefreshInterval time.Duration
	// MaxKeyAge [5m]: a set fetched longer ago is fetched again, in the
	// background, when a token uses it (the old set stays if auth cannot
	// answer), so a withdrawn key stops working everywhere soon after.
	MaxKeyAge    time.Duration
	FetchTimeout time.Duration    // [5s]: bound of one JWKS fetch
	Now          func() time.Time // [time.Now]
	Logger       *slog.Logger     // [discard]: JWKS fetch failures are logged here
}

// Verifier verifies access tokens against the auth service's JWKS, which it
// caches and refreshes when a token names a key it does not know.
type Verifier struct {
	src    KeySource
	cfg    VerifierConfig
	parser *jwt.Parser

	mu        sync.RWMutex
	keys      map[string]*ecdsa.PublicKey
	fetchedAt time.Time // of the keys in use

	fetchMu     sync.Mutex // one fetch at a time; waiters reuse its result
	lastAttempt time.Time
	lastErr     error
	refreshing  atomic.Bool // a background refresh of a stale set is running
}

// maxKeys bounds what one JWKS may make the verifier hold.
const maxKeys = 32

// NewVerifier returns a verifier of tokens signed by keys from src. Nothing
// is fetched until the first token arrives, so a service starts while auth
// is still down.
func NewVerifier(src KeySource, cfg VerifierConfig) *Verifier {
	if cfg.Issuer == "" {
		cfg.Issuer = Issuer
	}
	if cfg.Audience == "" {
		cfg.Audience = Audience
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = 30 * time.Second
	}
	if cfg.MinRefreshInterval == 0 {
		cfg.MinRefreshInterval = 5 * time.Second
	}
	if cfg.MaxKeyAge == 0 {
		cfg.MaxKeyAge = 5 * time.Minute
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Verifier{
		src: src, cfg: cfg,
		parser: jwt.NewParser(
			// Only ES256: "none", HS256 signed with the public key as
			// secret and every other algorithm fail here, before any key
			// is looked up.
			jwt.WithValidMethods([]string{Algorithm}),
			jwt.WithIssuer(cfg.Issuer),
			jwt.WithAudience(cfg.Audience),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(),
			jwt.WithLeeway(cfg.Leeway),
			jwt.WithTimeFunc(cfg.Now),
		),
	}
}

// maxTokenBytes rejects absurd headers before any parsing.
const maxTokenBytes = 8 << 10

// errKeysUnavailable marks a token that could not be checked because the
// JWKS could not be fetched: a 503, not the client's fault.
var errKeysUnavailable = errors.New("signing keys unavailable")

// Verify checks raw (a compact JWS) and returns who it identifies. Errors
// are Unauthenticated (401), or Unavailable (503) when the token names a
// key not yet known and auth cannot be asked for it.
func (v *Verifier) Verify(ctx context.Context, raw string) (Identity, error) {
	if raw == "" || len(raw) > maxTokenBytes {
		return Identity{}, invalidToken("the bearer token is malformed")
	}
	var claims Claims
	_, err := v.parser.ParseWithClaims(raw, &claims, func(t *jwt.Token) (any, error) {
		kid, _ := t.Header["kid"].(string)
		if kid == "" {
			return nil, errors.New("the token names no signing key (kid)")
		}
		return v.key(ctx, kid)
	})
	switch {
	case err == nil:
	case errors.Is(err, errKeysUnavailable):
		return Identity{}, errs.Wrap(errs.Unavailable, "jwks_unavailable", "the signing keys could not be fetched to check the token", err)
	case errors.Is(err, jwt.ErrTokenExpired):
		return Identity{}, errs.Wrap(errs.Unauthenticated, "token_expired", "the bearer token has expired", err)
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return Identity{}, invalidToken("the bearer token is not for this audience")
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return Identity{}, invalidToken("the bearer token was not issued by " + v.cfg.Issuer)
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return Identity{}, invalidToken("the bearer token's signature is invalid")
	default:
		return Identity{}, errs.Wrap(errs.Unauthenticated, "invalid_token", "the bearer token is invalid", err)
	}
	if claims.Subject == "" || claims.Role == "" {
		return Identity{}, invalidToken("the bearer token lacks sub or role")
	}
	return Identity{UserID: claims.Subject, Email: claims.Email, Role: claims.Role, Token: raw}, nil
}

func invalidToken(msg string) *errs.Error {
	return errs.New(errs.Unauthenticated, "invalid_token", msg)
}

// key returns the public key kid, fetching the JWKS when kid is unknown or
// the cached set is older than MaxKeyAge.
func (v *Verifier) key(ctx context.Context, kid string) (*ecdsa.PublicKey, error) {
	v.mu.RLock()
	k, known := v.keys[kid]
	fresh := v.cfg.Now().Sub(v.fetchedAt) < v.cfg.MaxKeyAge
	v.mu.RUnlock()
	if known {
		if !fresh && v.refreshing.CompareAndSwap(false, true) {
			// Refetch in the background: the known key answers now, so a
			// slow or down auth never delays requests with valid tokens.
			go func() {
				defer v.refreshing.Store(false)
				_ = v.refresh(context.WithoutCancel(ctx))
			}()
		}
		return k, nil
	}
	fetchErr := v.refresh(ctx)
	v.mu.RLock()
	k, ok := v.keys[kid]
	v.mu.RUnlock()
	switch {
	case ok:
		return k, nil
	case fetchErr != nil:
		return nil, errKeysUnavailable
	default:
		return nil, errors.New("the token is signed by an unknown key")
	}
}

// refresh fetches the JWKS unless a fetch was attempted less than
// MinRefreshInterval ago; it returns the error of the latest attempt.
func (v *Verifier) refresh(ctx context.Context) error {
	v.fetchMu.Lock()
	defer v.fetchMu.Unlock()
	now := v.cfg.Now()
	if !v.lastAttempt.IsZero() && now.Sub(v.lastAttempt) < v.cfg.MinRefreshInterval {
		return v.lastErr
	}
	v.lastAttempt = now
	// The fetch serves every waiting request, so one client going away
	// must not cancel it; it keeps ctx's trace.
	fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), v.cfg.FetchTimeout)
	defer cancel()
	set, err := v.src.JWKS(fetchCtx)
	if err != nil {
		v.lastErr = err
		v.cfg.Logger.WarnContext(ctx, "fetching the JWKS failed", "component", "auth", "err", err.Error())
		return err
	}
	keys := make(map[string]*ecdsa.PublicKey, len(set.Keys))
	for _, jwk := range set.Keys {
		if len(keys) == maxKeys {
			break
		}
		pub, err := jwk.PublicKey()
		if err != nil || jwk.Kid == "" {
			v.cfg.Logger.WarnContext(ctx, "ignoring a JWKS key", "component", "auth", "kid", jwk.Kid, "err", errString(err))
			continue
		}
		keys[jwk.Kid] = pub
	}
	v.mu.Lock()
	v.keys, v.fetchedAt = keys, now
	v.mu.Unlock()
	v.lastErr = nil
	return nil
}

func errString(err error) string {
	if err == nil {
		return "empty kid"
	}
	return err.Error()
}

// Middleware authenticates requests that carry "Authorization: Bearer
// <token>": a valid token puts its Identity in the request's context; an
// invalid one is answered 401 (503 if the keys cannot be fetched) with the
// JSON error body. A request without the header passes through without an
// identity, and handlers decide with Require or RequireRole.
func (v *Verifier) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		header := r.Header.Get("Authorization")
		if header == "" {
			next.ServeHTTP(w, r)
			return
		}
		scheme, token, ok := strings.Cut(header, " ")
		var id Identity
		var err error
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			err = invalidToken(`the Authorization header must be "Bearer <token>"`)
		} else {
			id, err = v.Verify(r.Context(), strings.TrimSpace(token))
		}
		if err != nil {
			if errs.Is(err, errs.Unauthenticated) {
				w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
			}
			httpserver.EncodeError(r.Context(), err, w)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}
