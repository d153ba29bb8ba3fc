package order

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/httpserver"
)

// UserIDHeader names the caller. It stands in for the verified bearer token
// until the auth service exists (see docs/architecture.md).
const UserIDHeader = "X-User-ID"

// NewHTTPHandler serves the order API:
//
//	POST /orders        create a PENDING order (header Idempotency-Key required)
//	GET  /orders/{id}   an order with its user embedded
func NewHTTPHandler(e Endpoints) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("POST /orders", httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...))
	mux.Handle("GET /orders/{id}", httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func caller(r *http.Request) (string, error) {
	id := r.Header.Get(UserIDHeader)
	if id == "" || !idPattern.MatchString(id) {
		return "", errs.New(errs.Unauthenticated, "unauthenticated", "the request does not say who is calling")
	}
	return id, nil
}

func decodeCreate(_ context.Context, r *http.Request) (any, error) {
	userID, err := caller(r)
	if err != nil {
		return nil, err
	}
	key := r.Header.Get("Idempotency-Key")
	if key == "" || len(key) > 255 {
		return nil, errs.New(errs.Invalid, "idempotency_key_required", "header Idempotency-Key (1-255 characters) is required")
	}
	req := createRequest{UserID: userID, IdempotencyKey: key}
	if err := httpserver.DecodeJSON(r, &req.Body); err != nil {
		return nil, err
	}
	return req, nil
}

func decodeGet(_ context.Context, r *http.Request) (any, error) {
	userID, err := caller(r)
	if err != nil {
		return nil, err
	}
	return getRequest{UserID: userID, ID: r.PathValue("id")}, nil
}
