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
// (kit/auth Verifier.Middleware):
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
	caller, err := auth.Require(ctx)
	if err != nil {
		return nil, err
	}
	page, err := paging.FromQuery(r.URL.Query())
	if err != nil {
		return nil, err
	}
	return listRequest{UserID: caller.UserID, Page: page}, nil
}
