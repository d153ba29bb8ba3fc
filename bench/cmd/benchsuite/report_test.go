package main

import (
	"os"
	"path/filepath"
	"slices"
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
