package payment

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
)

// newTestAPI is the HTTP API over a SQLite store and the simulator, and
// the service behind it (payments are charged over gRPC, not HTTP).
func newTestAPI(t *testing.T, authn func(http.Handler) http.Handler) (*httptest.Server, Service) {
	store, db := openStore(t, sqliteURL(t))
	svc := New(store, NewSimulator(db, 0), Config{ProviderTimeout: 100 * time.Millisecond})
	e := NewEndpoints(svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "payment"))
	srv := httptest.NewServer(NewHTTPHandler(e, authn))
	t.Cleanup(srv.Close)
	return srv, svc
}

// charge charges orderID for u1 through the service.
func charge(t *testing.T, svc Service, orderID, token string) Payment {
	t.Helper()
	p, _, err := svc.Charge(context.Background(), chargeReq(orderID, token))
	if err != nil {
		t.Fatalf("charge %s: %v", orderID, err)
	}
	return p
}

func TestHTTPGet(t *testing.T) {
	srv, svc := newTestAPI(t, authtest.HeaderIdentity)
	p := charge(t, svc, "o1", "tok_visa")
	resp, got := kittest.Send(t, "GET", srv.URL+"/payments/"+p.ID, map[string]string{"X-Test-User": "u1"}, "")
	if resp.StatusCode != 200 || got["id"] != p.ID || got["order_id"] != "o1" || got["status"] != "SUCCEEDED" ||
		got["amount_cents"] != 4800.0 || got["currency"] != "USD" || got["created_at"] != p.CreatedAt.Format(time.RFC3339Nano) {
		t.Errorf("get: %d %v", resp.StatusCode, got)
	}
	for _, key := range []string{"card_token", "user_id", "charge_id"} {
		if _, ok := got[key]; ok {
			t.Errorf("payment JSON shows %q: %v", key, got)
		}
	}
	declined := charge(t, svc, "o2", "tok_declined")
	resp, got = kittest.Send(t, "GET", srv.URL+"/payments/"+declined.ID, map[string]string{"X-Test-User": "u1"}, "")
	if resp.StatusCode != 200 || got["status"] != "DECLINED" || got["reason"] != "card_declined" {
		t.Errorf("get declined: %d %v", resp.StatusCode, got)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv, svc := newTestAPI(t, authtest.HeaderIdentity)
	paidID := charge(t, svc, "paid", "tok_visa").ID
	u1, u2 := map[string]string{"X-Test-User": "u1"}, map[string]string{"X-Test-User": "u2"}
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               string
		wantStatus         int
		wantCode           string
	}{
		{"get without token", "GET", "/payments/" + paidID, nil, "", 401, "unauthenticated"},
		{"get another's payment", "GET", "/payments/" + paidID, u2, "", 404, "payment_not_found"},
		{"get unknown payment", "GET", "/payments/nope", u1, "", 404, "payment_not_found"},
		{"no public charge route", "POST", "/payments", u1, `{"order_id":"o9"}`, 404, "no_route"},
		{"no internal HTTP route (gRPC now)", "POST", "/internal/payments", nil, `{"order_id":"o9"}`, 404, "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := kittest.Send(t, tt.method, srv.URL+tt.path, tt.header, tt.body)
			if code, _ := kittest.ErrorOf(body); resp.StatusCode != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			}
		})
	}
}

// TestHTTPBearerTokens drives GET /payments/{id} through kit/auth's real
// middleware.
func TestHTTPBearerTokens(t *testing.T) {
	iss := authtest.NewIssuer(t)
	srv, svc := newTestAPI(t, iss.Verifier().Middleware)
	url := srv.URL + "/payments/" + charge(t, svc, "o1", "tok_visa").ID
	bearer := func(token string) map[string]string { return map[string]string{"Authorization": "Bearer " + token} }
	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
	}{
		{"owner", bearer(iss.Token(t, "u1", auth.RoleCustomer)), 200},
		{"other user", bearer(iss.Token(t, "u2", auth.RoleCustomer)), 404},
		{"forged", bearer(authtest.NewIssuer(t).Token(t, "u1", auth.RoleCustomer)), 401},
		{"none", nil, 401},
	}
	for _, tt := range tests {
		if resp, body := kittest.Send(t, "GET", url, tt.header, ""); resp.StatusCode != tt.wantStatus {
			t.Errorf("%s: %d %v, want %d", tt.name, resp.StatusCode, body, tt.wantStatus)
		}
	}
}
