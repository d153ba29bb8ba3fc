package order

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/paging"
)

// NewHTTPHandler serves the order API. Every route needs a bearer token;
// authn is the middleware that verifies it (kit/auth Verifier.Middleware)
// and puts the caller's identity in the context, where the service reads
// it. A request without one is refused before anything else of it is
// read, so it answers 401 whatever else is wrong with it:
//
//	POST /orders        checkout (header Idempotency-Key required)
//	GET  /orders        the caller's orders (limit, cursor)
//	GET  /orders/{id}   one of the caller's orders, its user embedded
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("POST /orders", authn(httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /orders", authn(httptransport.NewServer(e.List, decodeList, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /orders/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeCreate(ctx context.Context, r *http.Request) (any, error) {
	if _, err := auth.Require(ctx); err != nil {
		return nil, err
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" || len(key) > 255 {
		return nil, errs.New(errs.Invalid, "idempotency_key_required", "header Idempotency-Key (1-255 characters) is required")
	}
	req := createRequest{IdempotencyKey: key}
	if err := httpserver.DecodeJSON(r, &req.Body); err != nil {
		return nil, err
	}
	return req, nil
}

func decodeGet(ctx context.Context, r *http.Request) (any, error) {
	if _, err := auth.Require(ctx); err != nil {
		return nil, err
	}
	return getRequest{ID: r.PathValue("id")}, nil
}

func decodeList(ctx context.Context, r *http.Request) (any, error) {
	if _, err := auth.Require(ctx); err != nil {
		return nil, err
	}
	page, err := paging.FromQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	return listRequest{Page: page}, nil
}
