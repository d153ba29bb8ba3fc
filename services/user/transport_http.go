package user

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the public user API. authn is the bearer-token
// middleware (kit/auth Verifier.Middleware); it puts the caller's identity
// in the context, where the service reads it, and the decoders refuse a
// request without one:
//
//	GET /users/me     the caller's profile (401 without a token)
//	GET /users/{id}   a profile, for its owner or an admin (404 for anyone else)
//
// Other services create, read and remove profiles over gRPC
// (NewGRPCServer).
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /users/me", authn(httptransport.NewServer(e.Me, decodeMe, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /users/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeMe(ctx context.Context, _ *http.Request) (any, error) {
	_, err := auth.Require(ctx)
	return meRequest{}, err
}

func decodeGet(ctx context.Context, r *http.Request) (any, error) {
	_, err := auth.Require(ctx)
	return getRequest{ID: r.PathValue("id")}, err
}
