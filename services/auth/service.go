package auth

import (
	"context"
	"crypto/ecdsa"
	"log/slog"
	"math"
	"net/mail"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"

	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/events"
)

// Service registers users and logs them in.
type Service interface {
	// Register creates the account and its profile and returns the user id.
	Register(ctx context.Context, req RegisterRequest) (userID string, err error)
	// Login checks the password and returns an access token. clientAddr is
	// the caller's address, for the rate limit.
	Login(ctx context.Context, req LoginRequest, clientAddr string) (Token, error)
	// JWKS returns the public keys that verify the tokens.
	JWKS(ctx context.Context) (kitauth.JWKS, error)
}

// Store keeps credentials.
type Store interface {
	// InsertCredentials stores c and records ev with it, atomically.
	InsertCredentials(ctx context.Context, c Credentials, ev events.Envelope) error
	Credentials(ctx context.Context, email string) (Credentials, error)
	EmailTaken(ctx context.Context, email string) (bool, error)
}

// Users is the user service, which owns profiles and roles.
type Users interface {
	Create(ctx context.Context, p Profile) error
	Delete(ctx context.Context, id string) error
	Get(ctx context.Context, id string) (Profile, error)
}

// Keys signs and publishes (the Keyring).
type Keys interface {
	Signing(ctx context.Context) (kid string, priv *ecdsa.PrivateKey, err error)
	JWKS(ctx context.Context) kitauth.JWKS
}

// Config is the service's policy.
type Config struct {
	Issuer   string        // [kit/auth Issuer]
	Audience string        // [kit/auth Audience]
	TokenTTL time.Duration // [15m]
	// Login rate limits; a zero Burst disables one. LoginPerEmail counts
	// the attempts on one email from one client address: someone guessing
	// a password from elsewhere cannot lock its owner out.
	LoginPerEmail Rate
	LoginPerAddr  Rate
	Hasher        *Hasher          // [DefaultHasher]
	Now           func() time.Time // [time.Now in UTC]
	Logger        *slog.Logger     // [discard]
}

type service struct {
	store   Store
	users   Users
	keys    Keys
	cfg     Config
	byEmail *Limiter
	byAddr  *Limiter
}

// New returns the auth service.
func New(store Store, users Users, keys Keys, cfg Config) Service {
	if cfg.Issuer == "" {
		cfg.Issuer = kitauth.Issuer
	}
	if cfg.Audience == "" {
		cfg.Audience = kitauth.Audience
	}
	if cfg.TokenTTL == 0 {
		cfg.TokenTTL = 15 * time.Minute
	}
	if cfg.Hasher == nil {
		cfg.Hasher = DefaultHasher()
	}
	if cfg.Now == nil {
		cfg.Now = func() time.Time { return time.Now().UTC() }
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &service{
		store: store, users: users, keys: keys, cfg: cfg,
		byEmail: NewLimiter(cfg.LoginPerEmail, cfg.Now),
		byAddr:  NewLimiter(cfg.LoginPerAddr, cfg.Now),
	}
}

// Password bounds. The upper one keeps hashing cheap for absurd inputs.
const (
	minPasswordRunes = 10
	maxPasswordBytes = 1024
)

func normalizeEmail(e string) string { return strings.ToLower(strings.TrimSpace(e)) }

// validateRegistration normalises req and returns every problem as one 422.
func validateRegistration(req RegisterRequest) (RegisterRequest, error) {
	req.Email, req.Name = normalizeEmail(req.Email), strings.TrimSpace(req.Name)
	problems := map[string]any{}
	if addr, err := mail.ParseAddress(req.Email); err != nil || addr.Address != req.Email || len(req.Email) > 254 {
		problems["email"] = "must be a plain email address like ada@example.com"
	}
	if n := utf8.RuneCountInString(req.Password); n < minPasswordRunes || len(req.Password) > maxPasswordBytes {
		problems["password"] = "must be at least 10 characters (and at most 1024 bytes)"
	}
	if n := utf8.RuneCountInString(req.Name); n == 0 || n > 100 {
		problems["name"] = "must be 1-100 characters"
	}
	if len(problems) > 0 {
		return req, errs.New(errs.Validation, "invalid_registration", "the registration has invalid fields").WithDetails(problems)
	}
	return req, nil
}

var errEmailTaken = errs.New(errs.Conflict, "email_taken", "an account with this email already exists")

func (s *service) Register(ctx context.Context, req RegisterRequest) (string, error) {
	req, err := validateRegistration(req)
	if err != nil {
		return "", err
	}
	if taken, err := s.store.EmailTaken(ctx, req.Email); err != nil {
		return "", err
	} else if taken {
		return "", errEmailTaken
	}
	c := Credentials{
		UserID: uuid.Must(uuid.NewV7()).String(), Email: req.Email,
		PasswordHash: s.cfg.Hasher.Hash(req.Password), CreatedAt: s.cfg.Now().Truncate(time.Microsecond),
	}
	ev, err := events.New("auth", events.UserRegistered, c.UserID, Registered{UserID: c.UserID, Email: c.Email, Name: req.Name})
	if err != nil {
		return "", errs.Wrap(errs.Internal, "event", "build user.registered", err)
	}
	// 1. The profile, first (every new user is a customer: an operator
	// grants admin in user, never a registration): if it fails, nothing was written here.
	if err := s.users.Create(ctx, Profile{ID: c.UserID, Email: c.Email, Name: req.Name, Role: kitauth.RoleCustomer}); err != nil {
		if e := errs.As(err); e.Kind == errs.Conflict {
			return "", errEmailTaken // user's unique email lost a race to another registration
		}
		return "", err
	}
	// 2. Credentials and event together; on failure, undo the profile.
	if err := s.store.InsertCredentials(ctx, c, ev); err != nil {
		undoCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if derr := s.users.Delete(undoCtx, c.UserID); derr != nil {
			s.cfg.Logger.ErrorContext(ctx, "profile without credentials left in user; remove it by hand",
				"user_id", c.UserID, "err", derr.Error(), "cause", err.Error())
		}
		return "", err
	}
	return c.UserID, nil
}

// errInvalidCredentials is the one answer to a wrong email or password.
var errInvalidCredentials = errs.New(errs.Unauthenticated, "invalid_credentials", "the email or password is incorrect")

func (s *service) Login(ctx context.Context, req LoginRequest, clientAddr string) (Token, error) {
	email := normalizeEmail(req.Email)
	if email == "" || req.Password == "" {
		return Token{}, errs.New(errs.Validation, "invalid_login", "email and password are required").
			WithDetails(map[string]any{"email": "required", "password": "required"})
	}
	if err := s.limit(clientAddr, email); err != nil {
		return Token{}, err
	}
	if len(req.Password) > maxPasswordBytes {
		return Token{}, errInvalidCredentials // no account has such a password
	}
	c, err := s.store.Credentials(ctx, email)
	switch {
	case errs.Is(err, errs.NotFound):
		s.cfg.Hasher.CheckNobody(req.Password) // same cost as a wrong password
		return Token{}, errInvalidCredentials
	case err != nil:
		return Token{}, err
	}
	ok, err := s.cfg.Hasher.Check(req.Password, c.PasswordHash)
	if err != nil {
		return Token{}, errs.Wrap(errs.Internal, "bad_hash", "stored password hash is unreadable", err)
	}
	if !ok {
		return Token{}, errInvalidCredentials
	}
	profile, err := s.users.Get(ctx, c.UserID)
	if errs.Is(err, errs.NotFound) {
		s.cfg.Logger.ErrorContext(ctx, "credentials without a profile", "user_id", c.UserID)
		return Token{}, errInvalidCredentials
	}
	if err != nil {
		return Token{}, err
	}
	return s.issue(ctx, c, profile.Role)
}

// limit takes one attempt from the address's bucket and from the bucket
// of the email at that address.
func (s *service) limit(addr, email string) error {
	for _, l := range []struct {
		lim *Limiter
		key string
	}{{s.byAddr, addr}, {s.byEmail, email + " " + addr}} {
		if ok, wait := l.lim.Allow(l.key); !ok {
			return errs.New(errs.TooManyRequests, "rate_limited", "too many login attempts; try again later").
				WithDetails(map[string]any{"retry_after_seconds": int(math.Ceil(wait.Seconds()))})
		}
	}
	return nil
}

func (s *service) issue(ctx context.Context, c Credentials, role string) (Token, error) {
	kid, priv, err := s.keys.Signing(ctx)
	if err != nil {
		return Token{}, err
	}
	now := s.cfg.Now()
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, kitauth.Claims{
		Email: c.Email, Role: role,
		RegisteredClaims: jwt.RegisteredClaims{
			Subject: c.UserID, Issuer: s.cfg.Issuer, Audience: jwt.ClaimStrings{s.cfg.Audience},
			IssuedAt: jwt.NewNumericDate(now), ExpiresAt: jwt.NewNumericDate(now.Add(s.cfg.TokenTTL)),
			ID: uuid.Must(uuid.NewV7()).String(),
		},
	})
	tok.Header["kid"] = kid
	signed, err := tok.SignedString(priv)
	if err != nil {
		return Token{}, errs.Wrap(errs.Internal, "sign", "could not sign the token", err)
	}
	return Token{AccessToken: signed, TokenType: "Bearer", ExpiresIn: int(s.cfg.TokenTTL.Seconds())}, nil
}

func (s *service) JWKS(ctx context.Context) (kitauth.JWKS, error) {
	return s.keys.JWKS(ctx), nil
}
