package payment

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the payment API:
//
//	POST /internal/payments   charge an order, once (internal: called by order; the edge never routes /internal)
//	GET  /payments/{id}       a payment, to its owner only
//
// authn authenticates the public route: kit/auth's Verifier.Middleware,
// which puts the caller's identity in the request context (tests pass a
// stand-in).
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("POST /internal/payments", httptransport.NewServer(e.Charge, decodeCharge, httpserver.EncodeJSON, opts...))
	mux.Handle("GET /payments/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeCharge(_ context.Context, r *http.Request) (any, error) {
	var req chargeRequest
	err := httpserver.DecodeJSON(r, &req.ChargeRequest)
	return req, err
}

func decodeGet(_ context.Context, r *http.Request) (any, error) {
	return getRequest{ID: r.PathValue("id")}, nil
}
