package auth

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/instrument"
)

func newTestAPI(t *testing.T, cfg Config) (*httptest.Server, fixture) {
	t.Helper()
	f := newFixture(t, cfg)
	e := NewEndpoints(f.svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "auth"))
	srv := httptest.NewServer(NewHTTPHandler(e, ClientAddr(1)))
	t.Cleanup(srv.Close)
	return srv, f
}

type answer struct {
	status int
	header http.Header
	body   map[string]any
}

func (a answer) errorCode() string {
	e, _ := a.body["error"].(map[string]any)
	code, _ := e["code"].(string)
	return code
}

func (a answer) errorMessage() string {
	e, _ := a.body["error"].(map[string]any)
	msg, _ := e["message"].(string)
	return msg
}

func do(t *testing.T, method, url, body string, header ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
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
	return answer{resp.StatusCode, resp.Header, got}
}

func TestHTTPRegisterLoginJWKS(t *testing.T) {
	srv, f := newTestAPI(t, Config{})
	reg := do(t, "POST", srv.URL+"/auth/register", `{"email":"Ada@Example.com","password":"correct horse","name":"Ada"}`)
	id, _ := reg.body["user_id"].(string)
	if reg.status != http.StatusCreated || id == "" || len(reg.body) != 1 {
		t.Fatalf("register: %d %v", reg.status, reg.body)
	}
	login := do(t, "POST", srv.URL+"/auth/login", `{"email":"ada@example.com","password":"correct horse"}`)
	tok, _ := login.body["access_token"].(string)
	if login.status != 200 || tok == "" || login.body["token_type"] != "Bearer" || login.body["expires_in"] != float64(900) {
		t.Fatalf("login: %d %v", login.status, login.body)
	}
	if login.header.Get("Cache-Control") != "no-store" {
		t.Errorf("login Cache-Control = %q, want no-store", login.header.Get("Cache-Control"))
	}
	if who, err := f.verifier().Verify(t.Context(), tok); err != nil || who.UserID != id || who.Role != "customer" {
		t.Errorf("token: %+v, %v", who, err)
	}
	jwks := do(t, "GET", srv.URL+"/auth/jwks", "")
	keys, _ := jwks.body["keys"].([]any)
	if jwks.status != 200 || len(keys) != 1 {
		t.Errorf("jwks: %d %v", jwks.status, jwks.body)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv, _ := newTestAPI(t, Config{})
	if a := do(t, "POST", srv.URL+"/auth/register", `{"email":"taken@example.com","password":"correct horse","name":"T"}`); a.status != http.StatusCreated {
		t.Fatalf("seed: %d %v", a.status, a.body)
	}
	tests := []struct {
		name, method, path, body string
		wantStatus               int
		wantCode                 string
	}{
		{"register malformed json", "POST", "/auth/register", `{"email":`, 400, "malformed_json"},
		{"register not an object", "POST", "/auth/register", `["a"]`, 400, "wrong_type"},
		{"register empty body", "POST", "/auth/register", ``, 400, "empty_body"},
		{"register trailing data", "POST", "/auth/register", `{"email":"a@b.co","password":"correct horse","name":"A"} {}`, 400, "malformed_json"},
		{"register unknown field", "POST", "/auth/register", `{"email":"a@b.co","password":"correct horse","name":"A","role":"admin"}`, 400, "unknown_field"},
		{"register wrong type", "POST", "/auth/register", `{"email":"a@b.co","password":1234567890,"name":"A"}`, 400, "wrong_type"},
		{"register oversized", "POST", "/auth/register", `{"name":"` + strings.Repeat("a", 70_000) + `"}`, 413, "body_too_large"},
		{"register short password", "POST", "/auth/register", `{"email":"a@b.co","password":"short","name":"A"}`, 422, "invalid_registration"},
		{"register missing fields", "POST", "/auth/register", `{}`, 422, "invalid_registration"},
		{"register bad email", "POST", "/auth/register", `{"email":"nope","password":"correct horse","name":"A"}`, 422, "invalid_registration"},
		{"register duplicate email", "POST", "/auth/register", `{"email":" TAKEN@example.com","password":"other password","name":"T2"}`, 409, "email_taken"},
		{"login malformed json", "POST", "/auth/login", `{"email":"a@b.co",`, 400, "malformed_json"},
		{"login unknown field", "POST", "/auth/login", `{"email":"a@b.co","password":"x","otp":"1"}`, 400, "unknown_field"},
		{"login oversized", "POST", "/auth/login", `{"password":"` + strings.Repeat("a", 70_000) + `"}`, 413, "body_too_large"},
		{"login missing fields", "POST", "/auth/login", `{"email":"a@b.co"}`, 422, "invalid_login"},
		{"login wrong password", "POST", "/auth/login", `{"email":"taken@example.com","password":"wrong password"}`, 401, "invalid_credentials"},
		{"login unknown email", "POST", "/auth/login", `{"email":"nobody@example.com","password":"correct horse"}`, 401, "invalid_credentials"},
		{"login huge password", "POST", "/auth/login", `{"email":"taken@example.com","password":"` + strings.Repeat("a", 2000) + `"}`, 401, "invalid_credentials"},
		{"GET login", "GET", "/auth/login", "", 404, "no_route"},
		{"unknown route", "GET", "/auth/nothing", "", 404, "no_route"},
	}
	messages := map[string]bool{}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A fresh client address per case keeps the login limit out of the way.
			a := do(t, tt.method, srv.URL+tt.path, tt.body, "X-Forwarded-For", fmt.Sprintf("10.1.0.%d", i))
			if a.status != tt.wantStatus || a.errorCode() != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", a.status, a.body, tt.wantStatus, tt.wantCode)
			}
			if tt.wantCode == "invalid_credentials" {
				messages[a.errorMessage()] = true
			}
		})
	}
	if len(messages) != 1 {
		t.Errorf("wrong password and unknown email answer differently: %v", messages)
	}
}

func TestHTTPLoginRateLimit(t *testing.T) {
	srv, f := newTestAPI(t, Config{LoginPerAddr: Rate{Burst: 2, Per: time.Minute}, LoginPerEmail: Rate{Burst: 100, Per: time.Minute}})
	login := func(addr string) answer {
		return do(t, "POST", srv.URL+"/auth/login", `{"email":"ada@example.com","password":"wrong password"}`, "X-Forwarded-For", addr)
	}
	for range 2 {
		if a := login("203.0.113.7"); a.status != 401 {
			t.Fatalf("within the limit: %d %v", a.status, a.body)
		}
	}
	a := login("203.0.113.7")
	if a.status != http.StatusTooManyRequests || a.errorCode() != "rate_limited" || a.header.Get("Retry-After") != "30" {
		t.Errorf("over the limit: %d %v Retry-After=%q", a.status, a.body, a.header.Get("Retry-After"))
	}
	// A client cannot escape by claiming another address: the trusted hop
	// is the rightmost X-Forwarded-For entry.
	if a := login("198.51.100.1, 203.0.113.7"); a.status != http.StatusTooManyRequests {
		t.Errorf("spoofed X-Forwarded-For prefix: %d, want 429", a.status)
	}
	if a := login("198.51.100.2"); a.status != 401 {
		t.Errorf("another client: %d, want 401", a.status)
	}
	f.clock.Advance(30 * time.Second)
	if a := login("203.0.113.7"); a.status != 401 {
		t.Errorf("after a token refilled: %d, want 401", a.status)
	}
}

func TestClientAddr(t *testing.T) {
	tests := []struct {
		name string
		hops int
		xff  []string
		want string
	}{
		{"peer", 0, []string{"1.1.1.1"}, "192.0.2.1"},
		{"one hop", 1, []string{"6.6.6.6, 1.1.1.1"}, "1.1.1.1"},
		{"two hops over two headers", 2, []string{"6.6.6.6, 1.1.1.1", "10.0.0.2"}, "1.1.1.1"},
		{"missing header", 1, nil, "192.0.2.1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest("POST", "/auth/login", nil)
			r.RemoteAddr = "192.0.2.1:5555"
			for _, h := range tt.xff {
				r.Header.Add("X-Forwarded-For", h)
			}
			if got := ClientAddr(tt.hops)(r); got != tt.want {
				t.Errorf("got %s, want %s", got, tt.want)
			}
		})
	}
}
