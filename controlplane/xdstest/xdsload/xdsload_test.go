package xdsload

import (
	"context"
	"testing"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestSmoke runs every convergence scenario at N=20 against Meshop's
// control plane (in-process, delta and SotW) and Consul's xDS server at
// its default and at its unlimited update rate (a reload between them), and
// the catalog scenario at two small sizes. It checks that the tool's own
// measurements are sane, not how fast anything is.
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: starts Consul and 40 simulated Envoys")
	}
	const n, m, k, rounds = 20, 2, 3, 2
	rep, err := Run(context.Background(), Options{
		Dir: t.TempDir(), Nodes: []int{n}, Upstreams: m, Instances: k, Rounds: rounds,
		Timeout: 60 * time.Second, Catalog: []CatalogSize{{4, 10}, {8, 5}}, CatalogSims: 20, CostFlips: 2,
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := rep.Servers(); len(got) != 4 {
		t.Fatalf("servers measured: %v", got)
	}
	for _, f := range rep.Fleets {
		t.Run(f.Server, func(t *testing.T) {
			if len(f.Errors) > 0 {
				t.Errorf("errors: %v", f.Errors)
			}
			if f.Nodes != n || f.Endpoints != m*k {
				t.Errorf("nodes %d endpoints %d, want %d and %d", f.Nodes, f.Endpoints, n, m*k)
			}
			for name, d := range map[string]Distribution{"connect": f.Connect, "storm": f.Storm} {
				saneDist(t, name, d, n)
			}
			saneDist(t, "eds", f.EDS, n*rounds)
			saneDist(t, "restore", f.Restore, n*rounds)
			if len(f.EDS.All) != n*rounds || len(f.Storm.All) != n {
				t.Errorf("samples kept: eds %d storm %d", len(f.EDS.All), len(f.Storm.All))
			}
			if len(f.FanOut) != rounds {
				t.Fatalf("fan-out rounds = %d", len(f.FanOut))
			}
			for _, r := range f.FanOut {
				if r.Nodes != n || r.Missed != 0 || r.SecondsToAll <= 0 || r.UpdatesPerSec <= 0 ||
					r.UpdatesPerSec*r.SecondsToAll < float64(n)-0.01 || r.P50Ms > r.SecondsToAll*1000 {
					t.Errorf("fan-out round %+v", r)
				}
			}
			if f.Server == ConsulDelta || f.Server == ConsulDeltaMax {
				// Consul is a process: its memory is read (in-process
				// Meshop reports none).
				if f.Idle.HeapBytes <= 0 || f.Connected.RSSBytes < f.Connected.HeapBytes/2 {
					t.Errorf("consul memory idle %+v connected %+v", f.Idle, f.Connected)
				}
			}
		})
	}
	if len(rep.Catalog) != 2 {
		t.Fatalf("catalog runs: %d", len(rep.Catalog))
	}
	for _, c := range rep.Catalog {
		if len(c.Errors) > 0 {
			t.Errorf("catalog %dx%d: %v", c.Services, c.Instances, c.Errors)
		}
		if c.Endpoints != c.Services*c.Instances || c.Sims != min(20, c.Endpoints) || c.Flips != 2 {
			t.Errorf("catalog run %+v", c)
		}
		// svc-3's callers are svc-0..2, the first 3k instances; the
		// first 20 are connected.
		saneDist(t, "change", c.Change, 2*min(3*c.Instances, 20))
		if c.ChangeCPUMs < 0 {
			t.Errorf("change CPU %.1fms < 0 (idle rate subtracted wrongly)", c.ChangeCPUMs)
		}
	}
}

func saneDist(t *testing.T, name string, d Distribution, want int) {
	t.Helper()
	if d.Samples != want || d.Missed != 0 {
		t.Errorf("%s: %d samples, %d missed, want %d", name, d.Samples, d.Missed, want)
	}
	if d.P50 < 0 || d.P50 > d.P99 || d.P99 > d.Max || d.Max > 60_000 || d.Max == 0 {
		t.Errorf("%s: p50 %.1f p99 %.1f max %.1f ms not ordered or out of range", name, d.P50, d.P99, d.Max)
	}
	for i := 1; i < len(d.All); i++ {
		if d.All[i] < d.All[i-1] {
			t.Errorf("%s: samples not sorted", name)
			break
		}
	}
}

// TestNodeGoals checks the goal predicates on hand-built node states, for
// both servers' naming.
func TestNodeGoals(t *testing.T) {
	ours := newNode("client-0-0", "client-0", []string{"up-0"}, true, flavorMeshop)
	ours.clusters["svc_up-0"] = clusterInfo{eds: "svc_up-0", connectTimeout: time.Second}
	ours.clusters["local_app"] = clusterInfo{}
	ours.listeners["outbound"] = []string{"outbound"}
	ours.types[resource.EndpointType].Names = []string{"svc_up-0"}
	ours.types[resource.RouteType].Names = []string{"outbound"}
	ours.routes["outbound"] = true
	ours.endpoints["svc_up-0"] = []string{"127.1.0.0", "127.1.0.1"}

	theirs := newNode("client-0-0-sidecar-proxy", "client-0", []string{"up-0"}, true, flavorConsul)
	theirs.clusters["up-0.default.dc1.internal.1234.consul"] = clusterInfo{eds: "up-0.default.dc1.internal.1234.consul", connectTimeout: time.Second}
	theirs.clusters["up-00.default.dc1.internal.1234.consul"] = clusterInfo{eds: "x", connectTimeout: 2 * time.Second}
	theirs.listeners["up-0:127.0.0.1:9000"] = []string{"up-0"}
	theirs.types[resource.EndpointType].Names = []string{"up-0.default.dc1.internal.1234.consul"}
	theirs.types[resource.RouteType].Names = []string{"up-0"}
	theirs.routes["up-0"] = true
	theirs.endpoints["up-0.default.dc1.internal.1234.consul"] = []string{"127.1.0.0", "127.1.0.1"}

	for _, n := range []*node{ours, theirs} {
		tests := []struct {
			name string
			goal func(*node) bool
			want bool
		}{
			{"complete", complete(2), true},
			{"complete wants 3 endpoints", complete(3), false},
			{"endpoint present", endpointsOf("up-0", "127.1.0.1", true, 2), true},
			{"endpoint absent", endpointsOf("up-0", "127.1.0.1", false, 1), false},
			{"other endpoint absent", endpointsOf("up-0", "127.1.0.9", false, 2), true},
			{"connect timeout", connectTimeout("up-0", time.Second), true},
			{"other connect timeout", connectTimeout("up-0", 2*time.Second), false},
		}
		for _, tt := range tests {
			if got := tt.goal(n); got != tt.want {
				t.Errorf("%v %s = %v, want %v", n.fl, tt.name, got, tt.want)
			}
		}
	}
	delete(ours.routes, "outbound")
	if complete(2)(ours) {
		t.Error("complete without the route configuration")
	}
}
