package debug_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/debug"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
)

type fakeCatalog struct{ st catalog.Status }

func (f *fakeCatalog) Status() catalog.Status { return f.st }

func instance(svc, id, upstreams string) catalog.Instance {
	return catalog.Instance{ID: id, Service: svc, Address: "10.0.0.1", Port: 15006, Status: catalog.StatusPassing,
		Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "mesh_upstreams": upstreams}}
}

// get requests path as the operator (token "op").
func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	return getWith(t, h, path, map[string]string{"X-Consul-Token": "op"})
}

func getWith(t *testing.T, h http.Handler, path string, header map[string]string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	h.ServeHTTP(rec, req)
	b, _ := io.ReadAll(rec.Body)
	return rec.Code, string(b)
}

// fakeOperators grants operator:read to "op"; "broken" is a Consul that
// cannot answer.
type fakeOperators struct{}

func (fakeOperators) OperatorRead(_ context.Context, token string) (bool, error) {
	if token == "broken" {
		return false, errors.New("consul down")
	}
	return token == "op", nil
}

// clusterNames digs the cluster names out of a config dump response.
func clusterNames(t *testing.T, body string) []string {
	t.Helper()
	names, err := debug.ClusterNames([]byte(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return names
}

func TestHandler(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := serve.New(serve.Options{Metrics: serve.NewMetrics(reg), Translate: translate.DefaultConfig()})
	cat := &fakeCatalog{}
	h := debug.NewHandler(srv, cat, fakeOperators{}, nil, reg, slog.New(slog.DiscardHandler))

	if code, body := get(t, h, "/ready"); code != http.StatusServiceUnavailable || !strings.Contains(body, "catalog not synced") {
		t.Errorf("/ready before sync = %d %s", code, body)
	}
	if code, _ := get(t, h, "/debug/model"); code != http.StatusServiceUnavailable {
		t.Errorf("/debug/model before sync = %d", code)
	}

	snap := &catalog.Snapshot{Index: 7, Services: pmap.FromMap(map[string][]catalog.Instance{
		"order":   {instance("order", "order-1", "user,product,payment,ghost")},
		"user":    {instance("user", "user-1", "")},
		"product": {instance("product", "product-1", "")},
		"payment": {instance("payment", "payment-1", "")},
	}), Policies: pmap.FromMap(map[string][]byte{"user": []byte(`{"timeout":"soon"}`)})}
	srv.Apply(snap, time.Now())
	// Snapshots are built for nodes that ask: an operator's read of
	// order-1 builds it as its Envoy's first request would.
	if _, _, _, err := srv.Resources("order-1"); err != nil {
		t.Fatal(err)
	}
	cat.st = catalog.Status{Synced: true, Reachable: true, Index: 7}

	tests := []struct {
		path     string
		code     int
		contains []string
	}{
		{"/health", 200, []string{`"status": "ok"`}},
		{"/ready", 200, []string{`"status": "ready"`}},
		{"/debug/nodes", 200, []string{`"id": "order-1"`, `"snapshot_key": "edge"`, `"consul"`, `upstream \"ghost\" is not a meshed service`}},
		{"/debug/model", 200, []string{`"order"`, `"kind": "policy"`, `"source": "default"`, "rejected"}},
		{"/debug/endpoints/user-1", 200, []string{`"endpoint": true`}},
		{"/debug/endpoints/gone-1", 200, []string{`"endpoint": false`}},
		{"/debug/config_dump", 400, []string{"missing_node"}},
		{"/debug/config_dump?node=nobody-1", 404, []string{"no_snapshot", "nobody-1"}},
		{"/debug/config_dump?node=edge-3", 200, []string{`"snapshot_key": "edge"`, "RoutesConfigDump"}},
		{"/metrics", 200, []string{"meshop_controlplane_snapshot_pushes_total", "meshop_controlplane_push_latency_seconds",
			"meshop_controlplane_connected_nodes", "meshop_controlplane_model_problems"}},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			code, body := get(t, h, tt.path)
			if code != tt.code {
				t.Errorf("status = %d, want %d\n%s", code, tt.code, body)
			}
			for _, c := range tt.contains {
				if !strings.Contains(body, c) {
					t.Errorf("body does not contain %q:\n%.2000s", c, body)
				}
			}
		})
	}

	// Configuration and profiles are for operators only; the rest is open.
	for _, tt := range []struct {
		name   string
		path   string
		header map[string]string
		code   int
	}{
		{"config dump without a token", "/debug/config_dump?node=order-1", nil, http.StatusUnauthorized},
		{"config dump with another token", "/debug/config_dump?node=order-1", map[string]string{"X-Consul-Token": "someone"}, http.StatusForbidden},
		{"config dump as a bearer", "/debug/config_dump?node=order-1", map[string]string{"Authorization": "Bearer op"}, http.StatusOK},
		{"config dump, Consul down", "/debug/config_dump?node=order-1", map[string]string{"X-Consul-Token": "broken"}, http.StatusServiceUnavailable},
		{"profiles without a token", "/debug/pprof/", nil, http.StatusUnauthorized},
		{"profiles as the operator", "/debug/pprof/", map[string]string{"X-Consul-Token": "op"}, http.StatusOK},
		{"nodes without a token", "/debug/nodes", nil, http.StatusOK},
		{"model without a token", "/debug/model", nil, http.StatusOK},
		{"metrics without a token", "/metrics", nil, http.StatusOK},
	} {
		if code, body := getWith(t, h, tt.path, tt.header); code != tt.code {
			t.Errorf("%s: %s = %d, want %d\n%.300s", tt.name, tt.path, code, tt.code, body)
		}
	}

	code, body := get(t, h, "/debug/config_dump?node=order-1")
	if code != 200 {
		t.Fatalf("config_dump = %d %s", code, body)
	}
	want := []string{"local_app", "otel_collector", "svc_payment", "svc_product", "svc_user"}
	if diff := cmp.Diff(want, clusterNames(t, body)); diff != "" {
		t.Errorf("order-1 clusters (-want +got):\n%s", diff)
	}

	cat.st.Reachable = false
	if code, body := get(t, h, "/ready"); code != 200 || !strings.Contains(body, "serving the last snapshot") {
		t.Errorf("/ready while Consul is down = %d %s", code, body)
	}
}
