package notification

import (
	"context"
	"net/http"
	"strconv"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/httpserver"
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
	req := listRequest{UserID: caller.UserID, Cursor: r.URL.Query().Get("cursor")}
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return nil, errs.New(errs.Invalid, "invalid_limit", "limit must be a number from 1 to 100")
		}
		req.Limit = n
	}
	return req, nil
}
