package user

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/instrument"
)

// testAPI is the HTTP API over a SQLite store, and the service behind it
// (profiles are created over gRPC, not HTTP).
type testAPI struct {
	*httptest.Server
	svc Service
}

func newTestAPI(t *testing.T) (testAPI, *authtest.Issuer) {
	store := openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "user.db"))
	svc := New(store)
	e := NewEndpoints(svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "user"))
	iss := authtest.NewIssuer(t)
	srv := httptest.NewServer(NewHTTPHandler(e, iss.Verifier().Middleware))
	t.Cleanup(srv.Close)
	return testAPI{Server: srv, svc: svc}, iss
}

// do sends a request, with a bearer token when token is not empty, and
// returns the status and the decoded JSON body (nil when there is none).
func do(t *testing.T, method, url, body, token string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) == 0 {
		return resp.StatusCode, nil
	}
	var got map[string]any
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatalf("%s %s: body is not JSON: %q", method, url, raw)
	}
	return resp.StatusCode, got
}

func errorCode(body map[string]any) string {
	e, _ := body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

// create creates a profile through the service and returns its id.
func create(t *testing.T, srv testAPI, email, name string) string {
	t.Helper()
	u, err := srv.svc.Create(context.Background(), NewUser{Email: email, Name: name})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	return u.ID
}

func TestHTTPGet(t *testing.T) {
	srv, iss := newTestAPI(t)
	id := create(t, srv, " Ada@Example.com ", "Ada Lovelace")
	own := iss.Token(t, id, auth.RoleCustomer)
	var first map[string]any
	for _, path := range []string{"/users/" + id, "/users/me"} {
		status, got := do(t, "GET", srv.URL+path, "", own)
		if status != http.StatusOK || got["id"] != id || got["name"] != "Ada Lovelace" || got["email"] != "ada@example.com" ||
			got["role"] != "customer" || got["created_at"] == nil {
			t.Errorf("GET %s with the owner's token: %d %v", path, status, got)
		}
		if first == nil {
			first = got
		} else if got["created_at"] != first["created_at"] {
			t.Errorf("GET %s: created_at %v, want %v", path, got["created_at"], first["created_at"])
		}
	}
	// An admin reads anyone's profile.
	if status, got := do(t, "GET", srv.URL+"/users/"+id, "", iss.Token(t, "someone-else", auth.RoleAdmin)); status != http.StatusOK || got["id"] != id {
		t.Errorf("admin read: %d %v", status, got)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv, iss := newTestAPI(t)
	taken := create(t, srv, "taken@example.com", "T")
	other := create(t, srv, "other@example.com", "O")
	customer := iss.Token(t, taken, auth.RoleCustomer)
	admin := iss.Token(t, "admin-1", auth.RoleAdmin)

	expiredClaims := authtest.Claims(taken, auth.RoleCustomer)
	expiredClaims.ExpiresAt = jwt.NewNumericDate(time.Now().Add(-time.Hour))
	expired := iss.Sign(t, expiredClaims)
	wrongAud := authtest.Claims(taken, auth.RoleCustomer)
	wrongAud.Audience = jwt.ClaimStrings{"elsewhere"}
	forged := authtest.NewIssuer(t)
	forged.Kid = iss.Kid // the right kid, another key
	enc := base64.RawURLEncoding
	algNone := enc.EncodeToString([]byte(`{"alg":"none","kid":"`+iss.Kid+`"}`)) + "." +
		enc.EncodeToString([]byte(`{"sub":"`+other+`","role":"admin","iss":"meshop-auth","aud":"meshop","exp":9999999999,"iat":1}`)) + "."

	tests := []struct {
		name, method, path, body, token string
		wantStatus                      int
		wantCode                        string
	}{
		{"me without token", "GET", "/users/me", "", "", 401, "unauthenticated"},
		{"get without token", "GET", "/users/" + taken, "", "", 401, "unauthenticated"},
		{"another user's profile", "GET", "/users/" + other, "", customer, 404, "user_not_found"},
		{"unknown id as customer", "GET", "/users/nope", "", customer, 404, "user_not_found"},
		{"unknown id as admin", "GET", "/users/nope", "", admin, 404, "user_not_found"},
		{"expired token", "GET", "/users/me", "", expired, 401, "token_expired"},
		{"wrong audience", "GET", "/users/me", "", iss.Sign(t, wrongAud), 401, "invalid_token"},
		{"forged signature", "GET", "/users/" + other, "", forged.Token(t, other, auth.RoleAdmin), 401, "invalid_token"},
		{"alg none", "GET", "/users/" + other, "", algNone, 401, "invalid_token"},
		{"unknown key", "GET", "/users/me", "", authtest.NewIssuer(t).Token(t, taken, auth.RoleCustomer), 401, "invalid_token"},
		{"me without a profile", "GET", "/users/me", "", iss.Token(t, "ghost", auth.RoleCustomer), 404, "user_not_found"},
		{"unknown route", "GET", "/nothing", "", "", 404, "no_route"},
		{"no internal HTTP route (gRPC now)", "GET", "/internal/users/" + taken, "", "", 404, "no_route"},
		{"no internal HTTP create", "POST", "/internal/users", `{"email":"a@b.co","name":"A"}`, "", 404, "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, tt.method, srv.URL+tt.path, tt.body, tt.token)
			if status != tt.wantStatus || errorCode(body) != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", status, body, tt.wantStatus, tt.wantCode)
			}
		})
	}
}
