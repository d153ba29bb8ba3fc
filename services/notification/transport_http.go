package notification

import (
	"context"
	"net/http"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/paging"
)

// NewHTTPHandler serves the notification API; authn verifies bearer tokens
// (kit/auth Verifier.Middleware) and puts the caller's identity in the
// context, where the service reads it. A request without one is refused
// before its query is read, so it answers 401 whatever else is wrong:
//
//	GET /notifications   the caller's notifications (limit, cursor)
func NewHTTPHandler(e Endpoints, authn func(http.Handler) http.Handler) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(httpserver.EncodeError)}
	mux := http.NewServeMux()
	mux.Handle("GET /notifications", authn(httptransport.NewServer(e.List, decodeList, httpserver.EncodeJSON, opts...)))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
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
