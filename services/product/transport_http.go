package product

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/paging"
)

// NewHTTPHandler serves the product API:
//
//	GET  /products                    the catalog, paged (?limit=1..100, default 20; ?cursor=)
//	GET  /products/{id}               one product
//	POST /products                    add a product (role admin)
//	POST /internal/reservations                    reserve an order's items, all or none
//	POST /internal/reservations/{order_id}/commit  the order is paid: keep the stock taken
//	POST /internal/reservations/{order_id}/release the order is cancelled: give the stock back
//
// /internal is for other services (order at checkout); the edge never
// routes it.
//
// authn authenticates the public routes: kit/auth's Verifier.Middleware,
// which puts the caller's identity in the request context (tests pass a
// stand-in). Internal routes take no identity: a caller's expiring token
// must not fail a checkout step.
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /products", authn(httptransport.NewServer(e.List, decodeList, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /products/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.Handle("POST /products", authn(httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...)))
	mux.Handle("POST /internal/reservations", httptransport.NewServer(e.Reserve, decodeReserve, httpserver.EncodeJSON, opts...))
	mux.Handle("POST /internal/reservations/{order_id}/commit", httptransport.NewServer(e.Commit, decodeOrderID, httpserver.EncodeJSON, opts...))
	mux.Handle("POST /internal/reservations/{order_id}/release", httptransport.NewServer(e.Release, decodeOrderID, httpserver.EncodeJSON, opts...))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeList(_ context.Context, r *http.Request) (any, error) {
	return paging.FromQuery(r.URL.Query())
}

func decodeGet(_ context.Context, r *http.Request) (any, error) {
	return getRequest{ID: r.PathValue("id")}, nil
}

func decodeCreate(_ context.Context, r *http.Request) (any, error) {
	var req createRequest
	err := httpserver.DecodeJSON(r, &req.NewProduct)
	return req, err
}

func decodeReserve(_ context.Context, r *http.Request) (any, error) {
	var req reserveRequest
	err := httpserver.DecodeJSON(r, &req.ReserveRequest)
	return req, err
}

func decodeOrderID(_ context.Context, r *http.Request) (any, error) {
	return orderIDRequest{OrderID: r.PathValue("order_id")}, nil
}
