package notification

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/services/kit/auth/authtest"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/instrument"
)

func TestHTTPList(t *testing.T) {
	s := openStore(t, "sqlite:"+t.TempDir()+"/n.db")
	h := Handler{Store: s}
	if err := handleInTx(s, h, mustEvent(t, events.OrderConfirmed, map[string]any{"order_id": "o1", "user_id": "u1"})); err != nil {
		t.Fatal(err)
	}
	e := NewEndpoints(New(s), slog.New(slog.DiscardHandler), instrument.NewMetrics(prometheus.NewRegistry(), "notification"))
	srv := httptest.NewServer(NewHTTPHandler(e, authtest.HeaderIdentity))
	defer srv.Close()

	tests := []struct {
		name, path, user string
		wantStatus       int
		wantItems        int
		wantCode         string
	}{
		{"mine", "/notifications", "u1", 200, 1, ""},
		{"someone else's are not mine", "/notifications", "u2", 200, 0, ""},
		{"no token", "/notifications", "", 401, 0, "unauthenticated"},
		{"bad limit", "/notifications?limit=0", "u1", 400, 0, "invalid_limit"},
		{"bad cursor", "/notifications?cursor=x", "u1", 400, 0, "invalid_cursor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest("GET", srv.URL+tt.path, nil)
			if tt.user != "" {
				req.Header.Set("X-Test-User", tt.user)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			raw, _ := io.ReadAll(resp.Body)
			var body struct {
				Items []Notification `json:"items"`
				Error struct{ Code string }
			}
			if err := json.Unmarshal(raw, &body); err != nil {
				t.Fatalf("not JSON: %q", raw)
			}
			if resp.StatusCode != tt.wantStatus || len(body.Items) != tt.wantItems || body.Error.Code != tt.wantCode {
				t.Errorf("got %d %s, want %d with %d items, code %q", resp.StatusCode, raw, tt.wantStatus, tt.wantItems, tt.wantCode)
			}
		})
	}
}
