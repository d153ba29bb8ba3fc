package order

import (
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/instrument"
	"github.com/meshop/meshop/services/kit/kittest"
)

func newTestAPI(t *testing.T) *httptest.Server { return newTestAPIOver(t, withAda) }

// newTestAPIOver is the HTTP API over the fakes reached as harness says.
func newTestAPIOver(t *testing.T, harness func(*testing.T) *harness) *httptest.Server {
	h := harness(t)
	e := NewEndpoints(h.svc, slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "order"))
	srv := httptest.NewServer(NewHTTPHandler(e, authtest.HeaderIdentity))
	t.Cleanup(srv.Close)
	return srv
}

const goodBody = `{"items":[{"product_id":"p1","quantity":2}],"payment":{"card_token":"tok_visa"}}`

func TestHTTPCheckoutReplayGetList(t *testing.T) {
	srv := newTestAPI(t)
	h := map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k1"}
	resp, created := kittest.Send(t, "POST", srv.URL+"/orders", h, goodBody)
	if resp.StatusCode != 201 || created["status"] != "CONFIRMED" || created["user"] == nil || created["total_cents"] != float64(700) {
		t.Fatalf("checkout: %d %v", resp.StatusCode, created)
	}
	// Same request, different spacing: the same order, marked as a replay.
	resp, again := kittest.Send(t, "POST", srv.URL+"/orders", h, strings.ReplaceAll(goodBody, ",", " , "))
	if resp.StatusCode != 201 || again["id"] != created["id"] || resp.Header.Get("Idempotent-Replayed") != "true" {
		t.Errorf("replay: %d %v %v", resp.StatusCode, again["id"], resp.Header)
	}
	resp, got := kittest.Send(t, "GET", srv.URL+"/orders/"+created["id"].(string), map[string]string{"X-Test-User": "u1"}, "")
	if resp.StatusCode != 200 || got["id"] != created["id"] {
		t.Errorf("get: %d %v", resp.StatusCode, got)
	}
	for _, key := range []string{"id", "user_id", "status", "items", "total_cents", "currency", "payment_id", "cancel_reason", "created_at", "user", "degraded"} {
		if _, ok := got[key]; !ok {
			t.Errorf("order JSON lacks %q: %v", key, got)
		}
	}
	resp, list := kittest.Send(t, "GET", srv.URL+"/orders?limit=10", map[string]string{"X-Test-User": "u1"}, "")
	if items, _ := list["items"].([]any); resp.StatusCode != 200 || len(items) != 1 || list["next_cursor"] != nil {
		t.Errorf("list: %d %v", resp.StatusCode, list)
	}
	resp, declined := kittest.Send(t, "POST", srv.URL+"/orders", map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k2"},
		strings.Replace(goodBody, "tok_visa", "tok_declined", 1))
	e, _ := declined["error"].(map[string]any)
	details, _ := e["details"].(map[string]any)
	if resp.StatusCode != 402 || e["code"] != "payment_declined" || details["order_id"] == nil {
		t.Errorf("declined: %d %v", resp.StatusCode, declined)
	}
}

func TestHTTPBadInput(t *testing.T) {
	srv := newTestAPI(t)
	caller := map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k-bad"}
	tests := []struct {
		name, method, path string
		header             map[string]string
		body               string
		wantStatus         int
		wantCode           string
	}{
		{"no token", "POST", "/orders", map[string]string{"Idempotency-Key": "k"}, goodBody, 401, "unauthenticated"},
		{"no idempotency key", "POST", "/orders", map[string]string{"X-Test-User": "u1"}, goodBody, 400, "idempotency_key_required"},
		{"malformed json", "POST", "/orders", caller, `{"items":[`, 400, "malformed_json"},
		{"unknown field", "POST", "/orders", caller, `{"items":[],"coupon":"x"}`, 400, "unknown_field"},
		{"wrong type", "POST", "/orders", caller, `{"items":[{"product_id":"p1","quantity":"2"}]}`, 400, "wrong_type"},
		{"missing fields", "POST", "/orders", caller, `{}`, 422, "invalid_order"},
		{"negative quantity", "POST", "/orders", caller, `{"items":[{"product_id":"p1","quantity":-2}],"payment":{"card_token":"tok_visa"}}`, 422, "invalid_order"},
		{"more than stock", "POST", "/orders", map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k-stock"}, `{"items":[{"product_id":"p1","quantity":11}],"payment":{"card_token":"tok_visa"}}`, 409, "out_of_stock"},
		{"unknown product", "POST", "/orders", map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k-unknown"}, `{"items":[{"product_id":"nope","quantity":1}],"payment":{"card_token":"tok_visa"}}`, 422, "unknown_product"},
		{"oversized", "POST", "/orders", caller, `{"items":[` + strings.Repeat(`{"product_id":"p1","quantity":1},`, 3000) + `]}`, 413, "body_too_large"},
		{"unknown order", "GET", "/orders/nope", caller, "", 404, "order_not_found"},
		{"no token on get", "GET", "/orders/nope", nil, "", 401, "unauthenticated"},
		{"bad limit", "GET", "/orders?limit=zero", caller, "", 400, "invalid_limit"},
		{"bad cursor", "GET", "/orders?cursor=a.b", caller, "", 400, "invalid_cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := kittest.Send(t, tt.method, srv.URL+tt.path, tt.header, tt.body)
			e, _ := body["error"].(map[string]any)
			if resp.StatusCode != tt.wantStatus || e["code"] != tt.wantCode {
				t.Errorf("got %d %v, want %d %s", resp.StatusCode, body, tt.wantStatus, tt.wantCode)
			}
		})
	}
	// None of the refused requests wrote an order under the key they used.
	resp, _ := kittest.Send(t, "POST", srv.URL+"/orders", caller, goodBody)
	if resp.StatusCode != 201 || resp.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first valid use of k-bad: %d replayed=%q", resp.StatusCode, resp.Header.Get("Idempotent-Replayed"))
	}
}

// TestHTTPRefusalsSameOverGRPC checks that a provider's refusal reaches the
// public API the same whether it crossed gRPC or not: status and body
// (but the ids of the order and payment) are equal.
func TestHTTPRefusalsSameOverGRPC(t *testing.T) {
	for _, tt := range []struct{ name, body string }{
		{"out of stock", `{"items":[{"product_id":"p2","quantity":5}],"payment":{"card_token":"tok_visa"}}`},
		{"unknown product", `{"items":[{"product_id":"nope","quantity":1}],"payment":{"card_token":"tok_visa"}}`},
		{"declined", strings.Replace(goodBody, "tok_visa", "tok_declined", 1)},
		{"unknown card", strings.Replace(goodBody, "tok_visa", "tok_bogus", 1)},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var statuses []int
			var bodies []map[string]any
			for _, tr := range transports {
				srv := newTestAPIOver(t, tr.harness)
				resp, body := kittest.Send(t, "POST", srv.URL+"/orders", map[string]string{"X-Test-User": "u1", "Idempotency-Key": "k1"}, tt.body)
				if e, ok := body["error"].(map[string]any); ok {
					if details, ok := e["details"].(map[string]any); ok {
						for _, id := range []string{"order_id", "payment_id"} {
							if details[id] != nil {
								details[id] = "(" + id + ")"
							}
						}
					}
				}
				statuses, bodies = append(statuses, resp.StatusCode), append(bodies, body)
			}
			if statuses[0] < 400 || statuses[0] != statuses[1] {
				t.Errorf("statuses %v, want one error status", statuses)
			}
			if diff := cmp.Diff(bodies[0], bodies[1]); diff != "" {
				t.Errorf("body (-direct +over gRPC):\n%s", diff)
			}
		})
	}
}
