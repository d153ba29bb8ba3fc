// Command auth runs the auth service. Settings: see kit/app.Settings and
// the table in services/auth/README.md (Settings below).
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/meshop/meshop/services/auth"
	authv1 "github.com/meshop/meshop/services/auth/proto/meshop/auth/v1"
	"github.com/meshop/meshop/services/kit/app"
	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/events"
	userclient "github.com/meshop/meshop/services/user/client"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "auth:", err)
		os.Exit(1)
	}
}

// Settings are auth's own environment variables (README.md has the table).
type Settings struct {
	Issuer           string
	Audience         string
	TokenTTL         time.Duration
	LoginPerEmail    int
	LoginPerAddr     int
	LoginPeriod      time.Duration
	XFFHops          int
	KeyRotationAge   time.Duration
	KeyPublishDelay  time.Duration
	KeyCheckInterval time.Duration
	KeySealer        *auth.KeySealer // from AUTH_KEY_ENCRYPTION_KEY (required)
}

func loadSettings(r *config.Reader) (Settings, error) {
	s := Settings{
		Issuer:           r.String("AUTH_ISSUER", kitauth.Issuer),
		Audience:         r.String("AUTH_AUDIENCE", kitauth.Audience),
		TokenTTL:         r.Duration("AUTH_TOKEN_TTL", 15*time.Minute),
		LoginPerEmail:    r.Int("AUTH_LOGIN_LIMIT_PER_EMAIL", 5, 0, 1_000_000),
		LoginPerAddr:     r.Int("AUTH_LOGIN_LIMIT_PER_ADDR", 20, 0, 1_000_000),
		LoginPeriod:      r.Duration("AUTH_LOGIN_LIMIT_PERIOD", time.Minute),
		XFFHops:          r.Int("AUTH_XFF_TRUSTED_HOPS", 0, 0, 10),
		KeyRotationAge:   r.Duration("AUTH_KEY_ROTATION_AGE", 30*24*time.Hour),
		KeyPublishDelay:  r.Duration("AUTH_KEY_PUBLISH_DELAY", 15*time.Second),
		KeyCheckInterval: r.Duration("AUTH_KEY_CHECK_INTERVAL", time.Minute),
	}
	if sealer, err := auth.ParseKeySealer(r.String("AUTH_KEY_ENCRYPTION_KEY", "")); err != nil {
		r.Fail("AUTH_KEY_ENCRYPTION_KEY", "%v", err)
	} else {
		s.KeySealer = sealer
	}
	if s.TokenTTL < time.Minute || s.TokenTTL > 24*time.Hour {
		r.Fail("AUTH_TOKEN_TTL", "must be between 1m and 24h")
	}
	if s.KeyRotationAge != 0 && s.KeyRotationAge < 2*(s.TokenTTL+s.KeyPublishDelay) {
		r.Fail("AUTH_KEY_ROTATION_AGE", "must be 0 (never) or at least twice AUTH_TOKEN_TTL + AUTH_KEY_PUBLISH_DELAY")
	}
	if s.KeyPublishDelay < 6*time.Second {
		r.Fail("AUTH_KEY_PUBLISH_DELAY", "must exceed the verifiers' 5s JWKS refresh interval")
	}
	if s.KeyCheckInterval <= 0 || s.LoginPeriod <= 0 {
		r.Fail("AUTH_KEY_CHECK_INTERVAL/AUTH_LOGIN_LIMIT_PERIOD", "must be positive")
	}
	return s, r.Err()
}

func run() error {
	ctx := context.Background()
	settings, err := loadSettings(config.FromEnv())
	if err != nil {
		return err
	}
	a, err := app.New(ctx, app.Spec{Name: "auth", Upstreams: []string{"user"}, PublicPrefixes: []string{"/auth"}})
	if err != nil {
		return err
	}
	db, err := a.OpenDB(ctx, auth.Migrations(), events.Migrations())
	if err != nil {
		return err
	}
	defer db.Close()
	bus, relay, err := a.Events(ctx, db) // NATS_URL, see kit/app.Settings
	if err != nil {
		return err
	}
	defer bus.Close()
	store := auth.NewStore(db, events.NewOutbox(a.Telemetry.Propagator, relay.Notify))

	keys := auth.NewKeyring(store, auth.KeyPolicy{
		RotationAge: settings.KeyRotationAge, PublishDelay: settings.KeyPublishDelay,
		TokenTTL: settings.TokenTTL, Leeway: 30 * time.Second, // kit/auth's default leeway
	}, settings.KeySealer, nil, a.Logger)
	if err := keys.Maintain(ctx); err != nil {
		return fmt.Errorf("signing keys: %w", err)
	}

	userConn, err := a.Mesh.Conn("user")
	if err != nil {
		return err
	}
	svc := auth.New(store, auth.NewUsers(userclient.New(userConn)), keys, auth.Config{
		Issuer: settings.Issuer, Audience: settings.Audience, TokenTTL: settings.TokenTTL,
		LoginPerEmail: auth.Rate{Burst: settings.LoginPerEmail, Per: settings.LoginPeriod},
		LoginPerAddr:  auth.Rate{Burst: settings.LoginPerAddr, Per: settings.LoginPeriod},
		Logger:        a.Logger,
	})
	endpoints := auth.NewEndpoints(svc, a.Logger, a.Requests)
	handler := auth.NewHTTPHandler(endpoints, auth.ClientAddr(settings.XFFHops))
	authv1.RegisterKeysServer(a.GRPC, auth.NewGRPCServer(endpoints))
	return a.Run(ctx, handler, relay.Run, keys.Run(settings.KeyCheckInterval))
}
