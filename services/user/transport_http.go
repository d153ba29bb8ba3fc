package user

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the user API. authn is the bearer-token middleware
// (kit/auth Verifier.Middleware), applied to the public routes only; it
// puts the caller's identity in the context, where the service reads it,
// and their decoders refuse a request without one:
//
//	GET    /users/me              the caller's profile (401 without a token)
//	GET    /users/{id}            a profile, for its owner or an admin (404 for anyone else)
//	POST   /internal/users        create a profile (auth, at registration)
//	GET    /internal/users/{id}   a profile (order embeds it; auth reads the role at login)
//	DELETE /internal/users/{id}   remove a profile (auth, undoing a failed registration); 204
//
// The edge never routes /internal: those are for services inside the mesh.
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /users/me", authn(httptransport.NewServer(e.Me, decodeMe, httpserver.EncodeJSON, opts...)))
	mux.Handle("GET /users/{id}", authn(httptransport.NewServer(e.Get, decodeGet, httpserver.EncodeJSON, opts...)))
	mux.Handle("POST /internal/users", httptransport.NewServer(e.Create, decodeCreate, httpserver.EncodeJSON, opts...))
	mux.Handle("GET /internal/users/{id}", httptransport.NewServer(e.Lookup, decodeLookup, httpserver.EncodeJSON, opts...))
	mux.Handle("DELETE /internal/users/{id}", httptransport.NewServer(e.Delete, decodeDelete, encodeNoContent, opts...))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

func decodeCreate(_ context.Context, r *http.Request) (any, error) {
	var req createRequest
	err := httpserver.DecodeJSON(r, &req.NewUser)
	return req, err
}

func decodeMe(ctx context.Context, _ *http.Request) (any, error) {
	_, err := auth.Require(ctx)
	return meRequest{}, err
}

func decodeGet(ctx context.Context, r *http.Request) (any, error) {
	_, err := auth.Require(ctx)
	return getRequest{ID: r.PathValue("id")}, err
}

func decodeLookup(_ context.Context, r *http.Request) (any, error) {
	return lookupRequest{ID: r.PathValue("id")}, nil
}

func decodeDelete(_ context.Context, r *http.Request) (any, error) {
	return deleteRequest{ID: r.PathValue("id")}, nil
}

// encodeNoContent answers 204 without a body, or the error.
func encodeNoContent(ctx context.Context, w http.ResponseWriter, response any) error {
	if err := response.(deleteResponse).Failed(); err != nil {
		httpserver.EncodeError(ctx, err, w)
		return nil
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
