package payment

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the public payment API:
//
//	GET /payments/{id}   a payment, to its owner only
//
// Charging (order, at checkout) is the internal gRPC API (NewGRPCServer).
//
// authn authenticates the route: kit/auth's Verifier.Middleware,
// which puts the caller's identity in the request context (tests pass a
// stand-in).
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /payments/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeGet(_ context.Context, r *http.Request) (any, error) {
	return getRequest{ID: r.PathValue("id")}, nil
}
