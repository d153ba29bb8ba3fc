package product

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
)

func newTestAPI(t *testing.T) *httptest.Server {
	store, _ := openStore(t, sqliteURL(t))
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "product"))
	srv := httptest.NewServer(NewHTTPHandler(e, authtest.HeaderIdentity))
	t.Cleanup(srv.Close)
	return srv
}

// send is kittest.Send answering the status.
func send(t *testing.T, method, url string, header map[string]string, body string) (int, map[string]any) {
	t.Helper()
	resp, got := kittest.Send(t, method, url, header, body)
	return resp.StatusCode, got
}

var (
	admin    = map[string]string{"X-Test-User": "u-admin", "X-Test-Role": "admin"}
	customer = map[string]string{"X-Test-User": "u1", "X-Test-Role": "customer"}
)

func TestHTTPCatalog(t *testing.T) {
	srv := newTestAPI(t)
	status, page := send(t, "GET", srv.URL+"/products", nil, "")
	items, _ := page["items"].([]any)
	if _, has := page["next_cursor"]; status != 200 || len(items) != 12 || has {
		t.Fatalf("GET /products: %d, %d items, %v", status, len(items), page["next_cursor"])
	}
	first := items[0].(map[string]any)
	for _, key := range []string{"id", "name", "description", "price_cents", "currency", "stock"} {
		if _, ok := first[key]; !ok {
			t.Errorf("product JSON lacks %q: %v", key, first)
		}
	}

	seen := 0
	url := srv.URL + "/products?limit=5"
	for {
		status, page := send(t, "GET", url, nil, "")
		if status != 200 {
			t.Fatalf("GET %s: %d %v", url, status, page)
		}
		seen += len(page["items"].([]any))
		next, ok := page["next_cursor"].(string)
		if !ok {
			break
		}
		url = srv.URL + "/products?limit=5&cursor=" + next
	}
	if seen != 12 {
		t.Errorf("paged through %d products, want 12", seen)
	}

	status, p := send(t, "GET", srv.URL+"/products/p-espresso", nil, "")
	if status != 200 || p["price_cents"] != 2400.0 || p["currency"] != "USD" {
		t.Errorf("GET p-espresso: %d %v", status, p)
	}
	status, p = send(t, "POST", srv.URL+"/products", admin, `{"id":"p-beans","name":"House Beans","price_cents":1500,"stock":9}`)
	if status != 201 || p["id"] != "p-beans" || p["currency"] != "USD" {
		t.Errorf("POST /products as admin: %d %v", status, p)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv := newTestAPI(t)
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               string
		wantStatus         int
		wantCode           string
		wantDetails        map[string]any
	}{
		{"limit not a number", "GET", "/products?limit=ten", nil, "", 400, "invalid_limit", nil},
		{"limit zero", "GET", "/products?limit=0", nil, "", 400, "invalid_limit", nil},
		{"limit too big", "GET", "/products?limit=101", nil, "", 400, "invalid_limit", nil},
		{"bad cursor", "GET", "/products?cursor=not-ours", nil, "", 400, "invalid_cursor", nil},
		{"empty cursor", "GET", "/products?cursor=", nil, "", 400, "invalid_cursor", nil},
		{"unknown product", "GET", "/products/p-unicorn", nil, "", 404, "product_not_found", nil},
		{"create without token", "POST", "/products", nil, `{"name":"X","price_cents":1}`, 401, "unauthenticated", nil},
		{"create as customer", "POST", "/products", customer, `{"name":"X","price_cents":1}`, 403, "forbidden", nil},
		{"create invalid", "POST", "/products", admin, `{"name":"","price_cents":-5}`, 422, "invalid_product", nil},
		{"create taken id", "POST", "/products", admin, `{"id":"p-mug","name":"Mug","price_cents":1800}`, 409, "product_exists", nil},
		{"create malformed", "POST", "/products", admin, `{"name":`, 400, "malformed_json", nil},
		{"create unknown field", "POST", "/products", admin, `{"name":"X","sku":"1"}`, 400, "unknown_field", nil},
		{"create wrong type", "POST", "/products", admin, `{"name":"X","price_cents":"1"}`, 400, "wrong_type", nil},
		{"create oversized", "POST", "/products", admin, `{"description":"` + strings.Repeat("a", 70_000) + `"}`, 413, "body_too_large", nil},
		{"unknown route", "GET", "/nothing", nil, "", 404, "no_route", nil},
		{"no internal HTTP route (gRPC now)", "POST", "/internal/reservations", nil, `{"order_id":"o9","items":[{"product_id":"p-mug","quantity":1}]}`, 404, "no_route", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := send(t, tt.method, srv.URL+tt.path, tt.header, tt.body)
			code, details := kittest.ErrorOf(body)
			if status != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", status, body, tt.wantStatus, tt.wantCode)
			}
			for k, v := range tt.wantDetails {
				if details[k] != v {
					t.Errorf("details[%s] = %v, want %v", k, details[k], v)
				}
			}
		})
	}
}

// TestHTTPBearerTokens drives POST /products through kit/auth's real
// middleware with tokens from a test issuer.
func TestHTTPBearerTokens(t *testing.T) {
	iss := authtest.NewIssuer(t)
	store, _ := openStore(t, sqliteURL(t))
	e := NewEndpoints(New(store), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "product"))
	srv := httptest.NewServer(NewHTTPHandler(e, iss.Verifier().Middleware))
	t.Cleanup(srv.Close)
	bearer := func(token string) map[string]string { return map[string]string{"Authorization": "Bearer " + token} }
	body := `{"name":"Cold Brew Bottle","price_cents":1999,"stock":3}`
	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
	}{
		{"admin", bearer(iss.Token(t, "u-admin", auth.RoleAdmin)), 201},
		{"customer", bearer(iss.Token(t, "u1", auth.RoleCustomer)), 403},
		{"forged", bearer(authtest.NewIssuer(t).Token(t, "u-admin", auth.RoleAdmin)), 401},
		{"garbage", bearer("not-a-token"), 401},
		{"none", nil, 401},
	}
	for _, tt := range tests {
		if status, got := send(t, "POST", srv.URL+"/products", tt.header, body); status != tt.wantStatus {
			t.Errorf("%s: %d %v, want %d", tt.name, status, got, tt.wantStatus)
		}
	}
	// The catalog stays public.
	if status, _ := send(t, "GET", srv.URL+"/products/p-mug", nil, ""); status != 200 {
		t.Errorf("GET without token: %d", status)
	}
}
