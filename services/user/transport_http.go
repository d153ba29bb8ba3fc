package user

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the user API:
//
//	POST /internal/users   create a profile (internal: called by auth; the edge never routes /internal)
//	GET  /users/{id}   a profile
func NewHTTPHandler(e Endpoints) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("POST /internal/users", httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...))
	mux.Handle("GET /users/{id}", httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeCreate(_ context.Context, r *http.Request) (any, error) {
	var req createRequest
	err := httpserver.DecodeJSON(r, &req.NewUser)
	return req, err
}

func decodeGet(_ context.Context, r *http.Request) (any, error) {
	return getRequest{ID: r.PathValue("id")}, nil
}
