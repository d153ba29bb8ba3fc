package user

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/instrument"
)

func newTestAPI(t *testing.T) *httptest.Server {
	store := openStore(t, "sqlite:"+filepath.Join(t.TempDir(), "user.db"))
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "user"))
	srv := httptest.NewServer(NewHTTPHandler(e))
	t.Cleanup(srv.Close)
	return srv
}

func do(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
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

func TestHTTPCreateAndGet(t *testing.T) {
	srv := newTestAPI(t)
	status, created := do(t, "POST", srv.URL+"/internal/users", `{"email":" Ada@Example.com ","name":"Ada Lovelace"}`)
	if status != http.StatusCreated || created["email"] != "ada@example.com" || created["role"] != "customer" {
		t.Fatalf("create: %d %v", status, created)
	}
	id, _ := created["id"].(string)
	status, got := do(t, "GET", srv.URL+"/users/"+id, "")
	if status != http.StatusOK || got["name"] != "Ada Lovelace" || got["created_at"] != created["created_at"] {
		t.Errorf("get: %d %v", status, got)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv := newTestAPI(t)
	if status, _ := do(t, "POST", srv.URL+"/internal/users", `{"email":"taken@example.com","name":"T"}`); status != http.StatusCreated {
		t.Fatalf("seed user: %d", status)
	}
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode                 string
	}{
		{"malformed json", "POST", "/internal/users", `{"email":`, 400, "malformed_json"},
		{"unknown field", "POST", "/internal/users", `{"email":"a@b.co","name":"A","admin":true}`, 400, "unknown_field"},
		{"wrong type", "POST", "/internal/users", `{"email":"a@b.co","name":42}`, 400, "wrong_type"},
		{"missing fields", "POST", "/internal/users", `{}`, 422, "invalid_user"},
		{"bad email", "POST", "/internal/users", `{"email":"not-an-email","name":"A"}`, 422, "invalid_user"},
		{"bad role", "POST", "/internal/users", `{"email":"a@b.co","name":"A","role":"root"}`, 422, "invalid_user"},
		{"duplicate email", "POST", "/internal/users", `{"email":"TAKEN@example.com","name":"T2"}`, 409, "email_taken"},
		{"oversized", "POST", "/internal/users", `{"name":"` + strings.Repeat("a", 70_000) + `"}`, 413, "body_too_large"},
		{"unknown id", "GET", "/users/nope", "", 404, "user_not_found"},
		{"unknown route", "GET", "/nothing", "", 404, "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := do(t, tt.method, srv.URL+tt.path, tt.body)
			if status != tt.wantStatus || errorCode(body) != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", status, body, tt.wantStatus, tt.wantCode)
			}
		})
	}
}
