package auth

import (
	"context"
	"log/slog"
	"net/http"

	"github.com/go-kit/kit/endpoint"

	kitauth "github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/instrument"
)

// Endpoints are the auth service's methods as go-kit endpoints, each
// wrapped once, here, with logging and metrics.
type Endpoints struct {
	Register endpoint.Endpoint
	Login    endpoint.Endpoint
	JWKS     endpoint.Endpoint
}

// NewEndpoints wraps svc.
func NewEndpoints(svc Service, logger *slog.Logger, metrics *instrument.Metrics) Endpoints {
	return Endpoints{
		Register: instrument.Endpoint(logger, metrics, "Register")(makeRegisterEndpoint(svc)),
		Login:    instrument.Endpoint(logger, metrics, "Login")(makeLoginEndpoint(svc)),
		JWKS:     instrument.Endpoint(logger, metrics, "JWKS")(makeJWKSEndpoint(svc)),
	}
}

type registerRequest struct{ RegisterRequest }

type loginRequest struct {
	LoginRequest
	ClientAddr string
}

type jwksRequest struct{}

// registerResponse is the new user's id or the error that took its place.
type registerResponse struct {
	UserID string `json:"user_id"`
	Err    error  `json:"-"`
}

// tokenResponse is an access token or the error that took its place.
type tokenResponse struct {
	Token
	Err error `json:"-"`
}

// jwksResponse is the key set or the error that took its place.
type jwksResponse struct {
	kitauth.JWKS
	Err error `json:"-"`
}

var (
	_ endpoint.Failer = registerResponse{}
	_ endpoint.Failer = tokenResponse{}
	_ endpoint.Failer = jwksResponse{}
)

func (r registerResponse) Failed() error { return r.Err }
func (r tokenResponse) Failed() error    { return r.Err }
func (r jwksResponse) Failed() error     { return r.Err }

func (r registerResponse) StatusCode() int { return http.StatusCreated }

// Headers keep tokens out of caches (RFC 6749 §5.1).
func (r tokenResponse) Headers() http.Header {
	return http.Header{"Cache-Control": {"no-store"}, "Pragma": {"no-cache"}}
}

func makeRegisterEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		id, err := svc.Register(ctx, request.(registerRequest).RegisterRequest)
		return registerResponse{UserID: id, Err: err}, nil
	}
}

func makeLoginEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, request any) (any, error) {
		req := request.(loginRequest)
		tok, err := svc.Login(ctx, req.LoginRequest, req.ClientAddr)
		return tokenResponse{Token: tok, Err: err}, nil
	}
}

func makeJWKSEndpoint(svc Service) endpoint.Endpoint {
	return func(ctx context.Context, _ any) (any, error) {
		set, err := svc.JWKS(ctx)
		return jwksResponse{JWKS: set, Err: err}, nil
	}
}
