package user

import (
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

func newTestAPI(t *testing.T) (*httptest.Server, *authtest.Issuer) {
	store := openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "user.db"))
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "user"))
	iss := authtest.NewIssuer(t)
	srv := httptest.NewServer(NewHTTPHandler(e, iss.Verifier().Middleware))
	t.Cleanup(srv.Close)
	return srv, iss
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

func create(t *testing.T, srv *httptest.Server, body string) map[string]any {
	t.Helper()
	status, created := do(t, "POST", srv.URL+"/internal/users", body, "")
	if status != http.StatusCreated {
		t.Fatalf("create: %d %v", status, created)
	}
	return created
}

func TestHTTPCreateAndGet(t *testing.T) {
	srv, iss := newTestAPI(t)
	created := create(t, srv, `{"email":" Ada@Example.com ","name":"Ada Lovelace"}`)
	if created["email"] != "ada@example.com" || created["role"] != "customer" {
		t.Fatalf("create: %v", created)
	}
	id, _ := created["id"].(string)
	own := iss.Token(t, id, auth.RoleCustomer)
	for _, path := range []string{"/users/" + id, "/users/me"} {
		status, got := do(t, "GET", srv.URL+path, "", own)
		if status != http.StatusOK || got["id"] != id || got["name"] != "Ada Lovelace" || got["created_at"] != created["created_at"] {
			t.Errorf("GET %s with the owner's token: %d %v", path, status, got)
		}
	}
	// Services read profiles without a token, on the internal route.
	if status, got := do(t, "GET", srv.URL+"/internal/users/"+id, "", ""); status != http.StatusOK || got["email"] != "ada@example.com" {
		t.Errorf("internal lookup: %d %v", status, got)
	}
	// An admin reads anyone's profile.
	if status, got := do(t, "GET", srv.URL+"/users/"+id, "", iss.Token(t, "someone-else", auth.RoleAdmin)); status != http.StatusOK || got["id"] != id {
		t.Errorf("admin read: %d %v", status, got)
	}
}

func TestHTTPDelete(t *testing.T) {
	srv, _ := newTestAPI(t)
	id := create(t, srv, `{"email":"ada@example.com","name":"Ada"}`)["id"].(string)
	for i := range 2 { // idempotent
		if status, body := do(t, "DELETE", srv.URL+"/internal/users/"+id, "", ""); status != http.StatusNoContent || body != nil {
			t.Errorf("delete %d: %d %v", i+1, status, body)
		}
	}
	if status, _ := do(t, "GET", srv.URL+"/internal/users/"+id, "", ""); status != http.StatusNotFound {
		t.Errorf("after delete: %d, want 404", status)
	}
	// The email is free again: a registration retried after an undo works.
	create(t, srv, `{"email":"ada@example.com","name":"Ada"}`)
}

func TestHTTPBadInput(t *testing.T) {
	srv, iss := newTestAPI(t)
	taken := create(t, srv, `{"email":"taken@example.com","name":"T"}`)["id"].(string)
	other := create(t, srv, `{"email":"other@example.com","name":"O"}`)["id"].(string)
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
		{"malformed json", "POST", "/internal/users", `{"email":`, "", 400, "malformed_json"},
		{"unknown field", "POST", "/internal/users", `{"email":"a@b.co","name":"A","admin":true}`, "", 400, "unknown_field"},
		{"wrong type", "POST", "/internal/users", `{"email":"a@b.co","name":42}`, "", 400, "wrong_type"},
		{"missing fields", "POST", "/internal/users", `{}`, "", 422, "invalid_user"},
		{"bad email", "POST", "/internal/users", `{"email":"not-an-email","name":"A"}`, "", 422, "invalid_user"},
		{"bad role", "POST", "/internal/users", `{"email":"a@b.co","name":"A","role":"root"}`, "", 422, "invalid_user"},
		{"duplicate email", "POST", "/internal/users", `{"email":"TAKEN@example.com","name":"T2"}`, "", 409, "email_taken"},
		{"oversized", "POST", "/internal/users", `{"name":"` + strings.Repeat("a", 70_000) + `"}`, "", 413, "body_too_large"},
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
		{"internal unknown id", "GET", "/internal/users/nope", "", "", 404, "user_not_found"},
		{"internal bad id", "GET", "/internal/users/a%20b", "", "", 404, "user_not_found"},
		{"unknown route", "GET", "/nothing", "", "", 404, "no_route"},
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
