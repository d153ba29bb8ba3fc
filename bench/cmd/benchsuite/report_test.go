package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3, 1, 2}, 2}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %g, want %g", c.xs, got, c.want)
		}
	}
}

// TestRoundRatios reads interleaved runs as the suite writes them (one
// header per invocation) and pairs each round's stack with that round's
// baseline.
func TestRoundRatios(t *testing.T) {
	out := `goos: linux
pkg: github.com/meshop/meshop/bench/kitgrpc
BenchmarkGRPC/stack=bare-2   	 1000	 100000 ns/op	 8800 B/op	 146 allocs/op
PASS
pkg: github.com/meshop/meshop/bench/kitgrpc
BenchmarkGRPC/stack=kit-2    	 1000	 125000 ns/op	 23000 B/op	 300 allocs/op
PASS
BenchmarkGRPC/stack=kit-2    	 1000	 110000 ns/op	 23000 B/op	 300 allocs/op
PASS
BenchmarkGRPC/stack=bare-2   	 1000	 88000 ns/op	 8800 B/op	 146 allocs/op
PASS
`
	path := filepath.Join(t.TempDir(), "kitgrpc.txt")
	if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
		t.Fatal(err)
	}
	m := micros[slices.IndexFunc(micros, func(m microBench) bool { return m.name == "kitgrpc" })]
	got := roundRatios(benchRuns(path), m, "kit")
	if want := []float64{0.8, 0.8}; !slices.Equal(got, want) {
		t.Errorf("ratios %v, want %v", got, want)
	}
	if means := benchMeans(path); means["BenchmarkGRPC/stack=bare"] != 94000 {
		t.Errorf("means %v", means)
	}
}

// TestReportIssue16 renders a synthetic xdsload.json with all four
// servers (Consul skipped over -consul-max-nodes at the largest N), the
// four catalog sizes and five kit HTTP rounds, and checks Consul's best
// setting per figure, the skipped lines and issue 16's target rows.
func TestReportIssue16(t *testing.T) {
	const kb = 1024
	mk := func(server string, n int, p99, fan, storm, heapPerNodeKiB float64) fleet {
		f := fleet{Server: server, Nodes: n, FanOut: []fanOut{{Nodes: n, UpdatesPerSec: fan}}}
		f.EDS = dist{Samples: 3 * n, P50: p99 / 2, P99: p99, Max: p99, All: []float64{p99 / 2, p99}}
		f.Storm = dist{Samples: n, P50: storm / 2, Max: storm}
		f.Idle.Heap = 10 << 20
		f.Connected.Heap = f.Idle.Heap + int64(heapPerNodeKiB*kb)*int64(n)
		return f
	}
	var x xdsReport
	x.Method.Nodes = []int{1000, 2000, 5000}
	x.Method.Servers = servers
	x.Method.ConsulMaxNodes = 2000
	// consul-delta-max's heap per node at 1,000 is no reading (its idle
	// heap above its connected one): never Consul's best.
	maxHeap := map[int]float64{1000: -50, 2000: 300}
	for _, n := range []int{1000, 2000} {
		x.Fleets = append(x.Fleets,
			mk("meshop-delta", n, 300, 4000, 800, 25),
			mk("meshop-sotw", n, 320, 3900, 700, 40),    // heap behind Consul's best
			mk("consul-delta", n, 4000, 150, 3000, 200), // best for heap
			mk("consul-delta-max", n, 1500, 600, 2000, maxHeap[n]))
	}
	x.Fleets = append(x.Fleets, mk("meshop-delta", 5000, 900, 4000, 4000, 28), mk("meshop-sotw", 5000, 1200, 4000, 4500, 29))
	zero := 0
	cat := func(services, instances int, idleMiB, idleKiB, cpuMs, p99 float64) catalogRun {
		c := catalogRun{Services: services, Instances: instances, Endpoints: services * instances, Sims: 1000, Missing: &zero, ChangeCPUMs: cpuMs}
		c.Idle.Heap = int64(idleMiB*(1<<20) + idleKiB*kb)
		c.Change.P99 = p99
		return c
	}
	x.Catalog = []catalogRun{
		cat(100, 10, 8, 0, 1.0, 100),
		cat(100, 100, 20, 0, 1.5, 150),
		cat(1000, 10, 40, 0, 2.0, 200),
		cat(10000, 10, 40, 9000*8, 2.6, 400), // 8 KiB per service from 1,000 × 10; 10.6 KiB from 100 × 10
	}
	results := t.TempDir()
	if err := writeJSON(filepath.Join(results, "xdsload.json"), x); err != nil {
		t.Fatal(err)
	}
	var kit strings.Builder
	for _, ratio := range []float64{0.95, 0.92, 0.88, 0.91, 0.93} {
		fmt.Fprintf(&kit, "BenchmarkHTTP/stack=bare-2 \t 1000\t %d ns/op\nBenchmarkHTTP/stack=kit-sample-1pct-2 \t 1000\t 100000 ns/op\n", int(ratio*100000))
	}
	if err := os.WriteFile(filepath.Join(results, "kithttp.txt"), []byte(kit.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	if err := writeReport(out, results, results, full); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	for _, want := range []string{
		"| 5000 | consul-delta | skipped at this N (over -consul-max-nodes 2000): not measured |",
		"| 5000 | consul-delta-max | skipped at this N (over -consul-max-nodes 2000): not measured |",
		"| 1000 | EDS p99 | 1.50 s (consul-delta-max) | 300 ms | 0.20 | 0.07 | 0.20 |",
		"| 2000 | heap per connected node | 200.0 KiB (consul-delta) | 25.0 KiB | 0.12 | 0.12 | 0.08 |",
		"| 1000 | fan-out | 600/s (consul-delta-max) |",
		"| 1000 | heap per connected node | 200.0 KiB (consul-delta) | 25.0 KiB | 0.12 | 0.12 | – |",
		"| ahead of Consul at its best at N = 1000 (meshop-delta; the target): EDS p99 | 300 ms vs 1.50 s (consul-delta-max), ratio 0.20 | yes |",
		"| ahead of Consul at its best at N = 2000 (meshop-sotw; the target): heap per connected node | 40.0 KiB vs 200.0 KiB (consul-delta), ratio 0.20 | yes |",
		"| EDS removal p99 ≤ 1.00 s at N = 5000 (meshop-sotw) | 1.20 s (missed 0) | **no** |",
		"| heap ≤ 30.0 KiB per connected node at N = 5000 (meshop-delta; the target) | 28.0 KiB | yes |",
		"| 10000 services on default Consul: no service missing (10000 × 10, 1000 Envoys) | missing 0, 0 errors | yes |",
		"| heap per service with its 10 instances ≤ 10.0 KiB (idle heap slope 1000 × 10 → 10000 × 10) | 8.0 KiB (0.8 KiB per endpoint) | yes |",
		"| one change costs the same at 1000 and 10000 services within 1.5×: CPU per change | 2.0 ms vs 2.6 ms (1.30×) | yes |",
		"| one change costs the same at 1000 and 10000 services within 1.5×: change → callers ACKed p99 | 200 ms vs 400 ms (2.00×) | **no** |",
		"| heap per endpoint (idle heap slope 100 × 10 → 100 × 100; no target) |",
		"median 0.92×, minimum 0.88× (5 rounds) | yes |",
		"target (issue 16): median ≥ 0.90× for `kit-sample-1pct`",
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if strings.Contains(doc, "Targets (issue 6)") || strings.Contains(doc, "| 5000 | EDS p99 |") {
		t.Errorf("report has issue 6's targets or a ratio at N = 5000 without Consul")
	}
	if _, err := os.Stat(filepath.Join(results, "convergence.png")); err != nil {
		t.Errorf("no plot: %v", err)
	}
}
