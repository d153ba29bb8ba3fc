package payment

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth"
	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
)

func newTestAPI(t *testing.T, authn func(http.Handler) http.Handler) *httptest.Server {
	store, _ := openStore(t, sqliteURL(t))
	svc := New(store, NewSimulator(0), Config{ProviderTimeout: 100 * time.Millisecond})
	e := NewEndpoints(svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "payment"))
	srv := httptest.NewServer(NewHTTPHandler(e, authn))
	t.Cleanup(srv.Close)
	return srv
}

func chargeBody(orderID, token string) string {
	return `{"order_id":"` + orderID + `","user_id":"u1","amount_cents":4800,"currency":"USD","card_token":"` + token + `"}`
}

func TestHTTPChargeAndGet(t *testing.T) {
	srv := newTestAPI(t, authtest.HeaderIdentity)
	resp, p := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o1", "tok_visa"))
	if resp.StatusCode != 201 || p["status"] != "SUCCEEDED" || p["order_id"] != "o1" || p["amount_cents"] != 4800.0 {
		t.Fatalf("charge: %d %v", resp.StatusCode, p)
	}
	for _, key := range []string{"id", "order_id", "status", "amount_cents", "currency", "created_at"} {
		if _, ok := p[key]; !ok {
			t.Errorf("payment JSON lacks %q: %v", key, p)
		}
	}
	for _, key := range []string{"card_token", "user_id", "charge_id"} {
		if _, ok := p[key]; ok {
			t.Errorf("payment JSON shows %q: %v", key, p)
		}
	}
	resp, again := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o1", "tok_visa"))
	if resp.StatusCode != 200 || again["id"] != p["id"] || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("repeat: %d %v %v", resp.StatusCode, again, resp.Header)
	}
	resp, declined := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o2", "tok_declined"))
	if resp.StatusCode != 201 || declined["status"] != "DECLINED" || declined["reason"] != "card_declined" {
		t.Errorf("declined: %d %v", resp.StatusCode, declined)
	}
	resp, failed := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o3", "tok_error"))
	if resp.StatusCode != 201 || failed["status"] != "FAILED" || failed["reason"] != "provider_error" {
		t.Errorf("provider error: %d %v", resp.StatusCode, failed)
	}

	id := p["id"].(string)
	resp, got := kittest.Send(t, "GET", srv.URL+"/payments/"+id, map[string]string{"X-Test-User": "u1"}, "")
	if resp.StatusCode != 200 || got["id"] != id || got["status"] != "SUCCEEDED" || got["created_at"] != p["created_at"] {
		t.Errorf("get: %d %v", resp.StatusCode, got)
	}
}

func TestHTTPTimeoutPending(t *testing.T) {
	srv := newTestAPI(t, authtest.HeaderIdentity)
	resp, body := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o1", "tok_timeout"))
	code, details := kittest.ErrorOf(body)
	if resp.StatusCode != 503 || code != "payment_pending" || details["payment_id"] == nil {
		t.Fatalf("timed-out charge: %d %v", resp.StatusCode, body)
	}
	resp, p := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o1", "tok_timeout"))
	if resp.StatusCode != 200 || p["status"] != "SUCCEEDED" || p["id"] != details["payment_id"] {
		t.Errorf("retry: %d %v", resp.StatusCode, p)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv := newTestAPI(t, authtest.HeaderIdentity)
	_, paid := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("paid", "tok_visa"))
	paidID := paid["id"].(string)
	const pay = "/internal/payments"
	u1, u2 := map[string]string{"X-Test-User": "u1"}, map[string]string{"X-Test-User": "u2"}
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               string
		wantStatus         int
		wantCode           string
	}{
		{"malformed json", "POST", pay, nil, `{"order_id":`, 400, "malformed_json"},
		{"empty body", "POST", pay, nil, ``, 400, "empty_body"},
		{"unknown field", "POST", pay, nil, `{"order_id":"o9","cvv":"123"}`, 400, "unknown_field"},
		{"wrong type", "POST", pay, nil, `{"order_id":"o9","amount_cents":"48.00"}`, 400, "wrong_type"},
		{"trailing data", "POST", pay, nil, chargeBody("o9", "tok_visa") + `{}`, 400, "malformed_json"},
		{"oversized", "POST", pay, nil, `{"card_token":"` + strings.Repeat("a", 70_000) + `"}`, 413, "body_too_large"},
		{"missing fields", "POST", pay, nil, `{}`, 422, "invalid_payment"},
		{"zero amount", "POST", pay, nil, strings.Replace(chargeBody("o9", "tok_visa"), "4800", "0", 1), 422, "invalid_payment"},
		{"unknown card", "POST", pay, nil, chargeBody("o-stolen", "tok_stolen"), 422, "invalid_card_token"},
		{"unknown card again", "POST", pay, nil, chargeBody("o-stolen", "tok_stolen"), 422, "invalid_card_token"},
		{"other amount, same order", "POST", pay, nil, strings.Replace(chargeBody("paid", "tok_visa"), "4800", "4900", 1), 409, "idempotency_mismatch"},
		{"get without token", "GET", "/payments/" + paidID, nil, "", 401, "unauthenticated"},
		{"get another's payment", "GET", "/payments/" + paidID, u2, "", 404, "payment_not_found"},
		{"get unknown payment", "GET", "/payments/nope", u1, "", 404, "payment_not_found"},
		{"no public charge route", "POST", "/payments", u1, chargeBody("o9", "tok_visa"), 404, "no_route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := kittest.Send(t, tt.method, srv.URL+tt.path, tt.header, tt.body)
			if code, _ := kittest.ErrorOf(body); resp.StatusCode != tt.wantStatus || code != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// Nothing was written for o9 by the refused requests.
	resp, p := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o9", "tok_visa"))
	if resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first valid charge of o9: %d %v", resp.StatusCode, p)
	}
}

// TestHTTPBearerTokens drives GET /payments/{id} through kit/auth's real
// middleware.
func TestHTTPBearerTokens(t *testing.T) {
	iss := authtest.NewIssuer(t)
	srv := newTestAPI(t, iss.Verifier().Middleware)
	_, p := kittest.Send(t, "POST", srv.URL+"/internal/payments", nil, chargeBody("o1", "tok_visa"))
	url := srv.URL + "/payments/" + p["id"].(string)
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
