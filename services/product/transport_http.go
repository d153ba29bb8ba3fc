package product

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/paging"
)

// NewHTTPHandler serves the public product API:
//
//	GET  /products        the catalog, paged (?limit=1..100, default 20; ?cursor=)
//	GET  /products/{id}   one product
//	POST /products        add a product (role admin)
//
// Reservations (order, at checkout) are the internal gRPC API
// (NewGRPCServer).
//
// authn authenticates the routes: kit/auth's Verifier.Middleware, which
// puts the caller's identity in the request context (tests pass a
// stand-in).
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /products", authn(httptransport.NewServer(e.List, decodeList, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /products/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.Handle("POST /products", authn(httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...)))
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
