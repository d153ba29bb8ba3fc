package auth

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"

	httptransport "github.com/go-kit/kit/transport/http"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/httpserver"
)

// NewHTTPHandler serves the auth API (all public, at the edge under /api):
//
//	POST /auth/register  {email,password,name} → 201 {user_id}
//	POST /auth/login     {email,password} → 200 {access_token,token_type,expires_in}
//	GET  /auth/jwks      {keys:[...]}
//
// clientAddr names the caller for the login rate limit (see ClientAddr).
func NewHTTPHandler(e Endpoints, clientAddr func(*http.Request) string) *http.ServeMux {
	opts := []httptransport.ServerOption{httptransport.ServerErrorEncoder(encodeError)}
	encode := func(ctx context.Context, w http.ResponseWriter, response any) error {
		if f, ok := response.(interface{ Failed() error }); ok && f.Failed() != nil {
			encodeError(ctx, f.Failed(), w)
			return nil
		}
		return httpserver.EncodeJSON(ctx, w, response)
	}
	mux := http.NewServeMux()
	mux.Handle("POST /auth/register", httptransport.NewServer(e.Register, decodeRegister, encode, opts...))
	mux.Handle("POST /auth/login", httptransport.NewServer(e.Login, decodeLogin(clientAddr), encode, opts...))
	mux.Handle("GET /auth/jwks", httptransport.NewServer(e.JWKS, decodeJWKS, encode, opts...))
	mux.HandleFunc("/", httpserver.NotFound)
	return mux
}

// encodeError is httpserver.EncodeError plus Retry-After on 429.
func encodeError(ctx context.Context, err error, w http.ResponseWriter) {
	if e := errs.As(err); e.Kind == errs.TooManyRequests {
		if s, ok := e.Details["retry_after_seconds"].(int); ok {
			w.Header().Set("Retry-After", strconv.Itoa(s))
		}
	}
	httpserver.EncodeError(ctx, err, w)
}

func decodeRegister(_ context.Context, r *http.Request) (any, error) {
	var req registerRequest
	err := httpserver.DecodeJSON(r, &req.RegisterRequest)
	return req, err
}

func decodeLogin(clientAddr func(*http.Request) string) httptransport.DecodeRequestFunc {
	return func(_ context.Context, r *http.Request) (any, error) {
		req := loginRequest{ClientAddr: clientAddr(r)}
		err := httpserver.DecodeJSON(r, &req.LoginRequest)
		return req, err
	}
}

func decodeJWKS(context.Context, *http.Request) (any, error) { return jwksRequest{}, nil }

// ClientAddr returns how the client's address is found. With xffHops = 0
// it is the peer's address, right when clients connect directly. Behind
// proxies that each append the address they saw to X-Forwarded-For (the
// edge Envoy does), xffHops is how many of those proxies are trusted: the
// address is the xffHops-th entry from the right, which a client cannot
// forge; entries further left are the client's own claims and are ignored.
func ClientAddr(xffHops int) func(*http.Request) string {
	return func(r *http.Request) string {
		peer, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			peer = r.RemoteAddr
		}
		if xffHops <= 0 {
			return peer
		}
		var hops []string
		for _, h := range r.Header.Values("X-Forwarded-For") {
			for _, a := range strings.Split(h, ",") {
				if a = strings.TrimSpace(a); a != "" {
					hops = append(hops, a)
				}
			}
		}
		if len(hops) < xffHops {
			return peer // not through the expected proxies
		}
		return hops[len(hops)-xffHops]
	}
}
