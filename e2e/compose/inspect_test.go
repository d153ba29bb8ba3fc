package compose

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

// These run in `make test` (no tag): they check that the system test reads
// the control plane's config dump and Jaeger's traces right, from answers
// shaped like the real ones (testdata).

func serveFile(t *testing.T, path, file string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != path {
			http.Error(w, `{"errors":[{"code":404,"msg":"trace not found"}]}`, http.StatusNotFound)
			return
		}
		http.ServeFile(w, r, file)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

func TestEdgeEndpoints(t *testing.T) {
	base := serveFile(t, "/debug/config_dump", "testdata/config_dump.json")
	tests := []struct {
		cluster string
		want    []string
	}{
		{"svc_order", []string{"172.18.0.12:15006", "172.18.0.14:15006", "172.18.0.9:15006"}},
		{"svc_product", []string{"172.18.0.10:15006"}},
		{"svc_nothing", nil},
	}
	for _, tt := range tests {
		got, err := edgeEndpoints(context.Background(), base, tt.cluster)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("edgeEndpoints(%s) = %v, %v; want %v", tt.cluster, got, err, tt.want)
		}
	}
}

func TestFetchTrace(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	base := serveFile(t, "/api/traces/"+id, "testdata/trace.json")
	got, err := fetchTrace(context.Background(), base, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.spans["edge"] != 1 || got.spans["order-sidecar"] != 2 || got.spans["order"] != 1 {
		t.Errorf("spans by service %v", got.spans)
	}
	for _, c := range []string{"local_app", "svc_product"} {
		if !got.clusters["order-sidecar"][c] {
			t.Errorf("order-sidecar clusters %v lack %s", got.clusters["order-sidecar"], c)
		}
	}
	if _, err := fetchTrace(context.Background(), base, "0000"); err == nil {
		t.Error("a missing trace is no error")
	}
}

func TestPassing(t *testing.T) {
	base := serveFile(t, "/v1/health/service/order", "testdata/health_order.json")
	got, err := passing(context.Background(), base, "order")
	if want := []string{"order-1", "order-2", "order-3"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("passing = %v, %v; want %v", got, err, want)
	}
}
