// Command benchsuite runs Meshop's benchmark suite (make bench) and writes
// BENCHMARKS.md from what it measured:
//
//	go build controlplane, xdsload ──▶ xdsload (ours vs Consul's xDS)  ──▶ results/xdsload.json
//	go test -bench (translate, serve) ──▶ results/*.txt ──▶ benchstat
//	kit stacks vs bare (kithttp, kitgrpc), interleaved rounds ──▶ results/*.txt ──▶ benchstat
//	servicepath (whole local system, 1% and 100% sampling) ──▶ results/servicepath.json
//	──▶ BENCHMARKS.md (the generated section) + results/convergence.png
//
// -quick runs a reduced suite (N=100, small catalog, short runs, no
// profiles, two of the three service path runs) in under five minutes.
// Every number in the generated section comes from a file in the results
// directory and the command that wrote it is listed there.
//
// The full suite (issue 16) measures N = 1,000, 2,000 and 5,000 simulated
// Envoys, Consul's two settings up to 2,000 only, and the catalog up to
// 10,000 services × 10 instances, in at most 45 minutes on the 2-core
// machine.
//
// A kit stack and its bare baseline are run in interleaved rounds: the
// test binary is built once and each round runs every stack once, one
// invocation each, the first stack rotating from round to round, so the
// machine's changing load reaches every stack alike. The report pairs each
// round's stack with that round's baseline: throughput ratio per round,
// median (held to the target) and minimum.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/meshop/meshop/bench/servicepath"
	"github.com/meshop/meshop/localenv"
)

// A microBench is one go test -bench run of the suite, its output
// results/<name>.txt, compared by benchstat -col col.
type microBench struct {
	name, pkg, bench string
	benchtime        string // "" is the suite's BenchTime
	col              string
	title            string // the report's heading for it
	// stacks make it a comparison of a kit stack with a bare baseline on
	// the same handler, sub-benchmarks stack=<name> (stacks[0] is the
	// baseline), run in interleaved rounds; target is the stack whose
	// median throughput ratio (of the baseline's, over the rounds) is held
	// to targetRatio, set by issue.
	stacks      []string
	target      string
	targetRatio float64
	issue       int
}

var micros = []microBench{
	{name: "translate", pkg: "./controlplane/translate", bench: "Endpoints10k", benchtime: "20x",
		title: "Translating 10,000 endpoints (`BenchmarkEndpoints10k`, controlplane/translate): per endpoint, the load assignment alone and with what serve adds once per change (validation, the marshal that hashes it)"},
	{name: "serve", pkg: "./controlplane/serve", bench: "SingleChange", benchtime: "200x", col: "/services",
		title: "Cost of one change (`BenchmarkSingleChange`, controlplane/serve): one instance flips health in a catalog of 1,000 or 10,000 services × 10 instances (its 30 callers, whose nodes asked, rebuilt)"},
	{name: "rotation", pkg: "./controlplane/serve", bench: "RotationStorm", benchtime: "3x",
		title: "Rotation storm (`BenchmarkRotationStorm`, controlplane/serve, issue 11): every one of 100 services gets a new leaf at once; time until each of 1,000 simulated Envoys (state of the world, real ADS server on loopback, no TLS on the ADS connection) ACKs its new `mesh_identity` secret; target p99 ≤ 1 s"},
	{name: "churn", pkg: "./controlplane/serve", bench: "NodeChurn", benchtime: "1x",
		title: "Node churn (`BenchmarkNodeChurn`, controlplane/serve, issue 13): 10,000 connect/disconnect cycles of distinct node ids (state of the world, real ADS server on loopback, 100 at a time); heap after a forced GC against the heap before the churn: `heap-bytes` once the grace period (`NODE_FORGET_AFTER`) has passed and every departed node is forgotten, `retained-bytes` while the 10,000 are within it"},
	{name: "kithttp", pkg: "./bench/kithttp", bench: "HTTP", col: "/stack",
		stacks: []string{"bare", "kit-sample-1pct", "kit-sample-100pct"}, target: "kit-sample-1pct", targetRatio: 0.90, issue: 16,
		title: "Kit HTTP stack vs bare net/http (`BenchmarkHTTP`, bench/kithttp): one JSON POST round trip over loopback, parallel clients; ns/op is inverse throughput"},
	{name: "kitgrpc", pkg: "./bench/kitgrpc", bench: "GRPC", col: "/stack",
		stacks: []string{"bare", "kit-sample-1pct", "kit-sample-100pct"}, target: "kit-sample-1pct", targetRatio: 0.85, issue: 10,
		title: "Kit gRPC stack vs bare grpc-go (`BenchmarkGRPC`, bench/kitgrpc): one unary call over loopback on one connection, parallel clients; the kit samples 1% or all of the new traces; ns/op is inverse throughput"},
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "benchsuite:", err)
		os.Exit(1)
	}
}

// suite is the size of a run.
type suite struct {
	Quick bool
	Nodes string
	// ConsulMaxNodes skips Consul's servers at fleets larger than this
	// (xdsload -consul-max-nodes; 0: every fleet).
	ConsulMaxNodes int
	Rounds         int
	// Profile takes xdsload's CPU profiles (an extra round per server at
	// the largest N) and the catalog's heap profiles.
	Profile     bool
	Catalog     string
	CatalogSims int
	CostFlips   int
	BenchCount  int
	BenchTime   string
	Rate        float64
	Duration    time.Duration
	// ServiceRuns are the service path's runs (each starts the whole
	// local system).
	ServiceRuns []serviceRun
}

// serviceRun is one service path run: its tracing sampling, and whether
// the apps talk in plaintext instead of mutual TLS with RBAC.
type serviceRun struct {
	sampling  float64
	plaintext bool
}

// serviceRuns are the full suite's service path runs: 1% and 100%
// sampling with mTLS, 1% in plaintext (what zero trust costs).
var serviceRuns = []serviceRun{{0.01, false}, {1, false}, {0.01, true}}

var (
	full = suite{Nodes: "1000,2000,5000", ConsulMaxNodes: 2000, Rounds: 3, Profile: true, Catalog: "100x10,100x100,1000x10,10000x10", CatalogSims: 1000, CostFlips: 10,
		BenchCount: 6, BenchTime: "2s", Rate: 40, Duration: 30 * time.Second, ServiceRuns: serviceRuns}
	quick = suite{Quick: true, Nodes: "100", Rounds: 2, Catalog: "20x10,100x10,20x50", CatalogSims: 100, CostFlips: 6,
		BenchCount: 3, BenchTime: "1s", Rate: 20, Duration: 8 * time.Second, ServiceRuns: []serviceRun{serviceRuns[0], serviceRuns[2]}}
)

func run() error {
	var (
		q       bool
		out     string
		results string
		skip    string
		only    string
	)
	flag.BoolVar(&q, "quick", false, "the reduced suite (under five minutes)")
	flag.StringVar(&out, "out", "", "report to write, its generated section replaced (default BENCHMARKS.md, or .bench/BENCHMARKS.md with -quick)")
	flag.StringVar(&results, "results", "", "directory for raw results (default bench/results, or .bench/results with -quick)")
	flag.StringVar(&skip, "skip", "", "parts to skip: xds, micro, stat, service (comma separated)")
	flag.StringVar(&only, "micro", "", "the microbenchmarks micro and stat run (comma separated; default all: translate, serve, rotation, churn, kithttp, kitgrpc)")
	flag.Parse()
	root, err := localenv.RepoRoot()
	if err != nil {
		return err
	}
	s := full
	if q {
		s = quick
	}
	if results == "" {
		results = filepath.Join(root, "bench", "results")
		if q {
			results = filepath.Join(root, ".bench", "results")
		}
	}
	if out == "" {
		out = "BENCHMARKS.md"
		if q {
			out = filepath.Join(".bench", "BENCHMARKS.md")
		}
	}
	if !filepath.IsAbs(out) {
		out = filepath.Join(root, out)
	}
	if err := os.MkdirAll(filepath.Join(results, "bin"), 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "benchsuite-")
	if err != nil {
		return err
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	b := &runner{root: root, results: results, work: work, s: s}
	skipped := func(part string) bool { return strings.Contains(","+skip+",", ","+part+",") }
	for _, m := range micros {
		if only == "" || strings.Contains(","+only+",", ","+m.name+",") {
			b.micros = append(b.micros, m)
		}
	}
	if len(b.micros) == 0 {
		return fmt.Errorf("-micro %q names none of the microbenchmarks", only)
	}

	start := time.Now()
	for _, part := range []struct {
		name string
		f    func(context.Context) error
	}{{"xds", b.xds}, {"micro", b.micro}, {"stat", b.stat}, {"service", b.service}} {
		if skipped(part.name) {
			continue
		}
		if err := part.f(ctx); err != nil {
			return err
		}
		if err := b.saveCommands(part.name); err != nil {
			return err
		}
	}
	if err := writeReport(out, root, results, s); err != nil {
		return err
	}
	b.logf("done in %s; wrote %s", time.Since(start).Round(time.Second), out)
	os.RemoveAll(work)
	return nil
}

type runner struct {
	root, results, work string
	s                   suite
	micros              []microBench // the ones this run runs
	commands            []string
}

func (b *runner) logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s benchsuite: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

// sh runs a command from the repository root, its stdout to outFile (or
// stderr), and records it.
func (b *runner) sh(ctx context.Context, outFile string, name string, args ...string) error {
	line := name + " " + strings.Join(args, " ")
	if outFile != "" {
		line += " > " + rel(b.root, outFile)
	}
	b.commands = append(b.commands, line)
	var out io.Writer
	if outFile != "" {
		f, err := os.Create(outFile)
		if err != nil {
			return err
		}
		defer f.Close()
		out = f
	}
	return b.exec(ctx, out, line, name, args...)
}

// exec runs a command from the repository root, its stdout to out (when
// not nil) and stderr; line is how it is logged.
func (b *runner) exec(ctx context.Context, out io.Writer, line string, name string, args ...string) error {
	b.logf("$ %s", line)
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = b.root
	cmd.Stderr = os.Stderr
	cmd.Stdout = os.Stderr
	if out != nil {
		cmd.Stdout = io.MultiWriter(out, os.Stderr)
	}
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s: %w", line, err)
	}
	return nil
}

func rel(root, p string) string {
	if r, err := filepath.Rel(root, p); err == nil {
		return r
	}
	return p
}

func (b *runner) xds(ctx context.Context) error {
	bin := filepath.Join(b.results, "bin")
	if err := b.sh(ctx, "", "go", "build", "-o", rel(b.root, bin)+"/", "./controlplane/cmd/controlplane", "./controlplane/cmd/xdsload"); err != nil {
		return err
	}
	dir := filepath.Join(b.work, "xdsload")
	if err := b.sh(ctx, "", "./"+rel(b.root, filepath.Join(bin, "xdsload")),
		"-controlplane", rel(b.root, filepath.Join(bin, "controlplane")),
		"-nodes", b.s.Nodes, "-consul-max-nodes", fmt.Sprint(b.s.ConsulMaxNodes), "-rounds", fmt.Sprint(b.s.Rounds), "-settle", "1s",
		"-catalog", b.s.Catalog, "-catalog-sims", fmt.Sprint(b.s.CatalogSims), "-cost-flips", fmt.Sprint(b.s.CostFlips),
		fmt.Sprintf("-profile=%t", b.s.Profile), "-dir", dir, "-out", rel(b.root, filepath.Join(b.results, "xdsload.json"))); err != nil {
		return err
	}
	// Keep this run's profiles, only (Consul's data directory and logs
	// stay behind).
	profiles := filepath.Join(b.results, "profiles")
	if err := os.RemoveAll(profiles); err != nil {
		return err
	}
	if err := os.MkdirAll(profiles, 0o755); err != nil {
		return err
	}
	matches, _ := filepath.Glob(filepath.Join(dir, "*.pprof"))
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(profiles, filepath.Base(m)), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

func (b *runner) micro(ctx context.Context) error {
	for _, m := range b.micros {
		benchtime := m.benchtime
		if benchtime == "" {
			benchtime = b.s.BenchTime
		}
		out := filepath.Join(b.results, m.name+".txt")
		if len(m.stacks) > 0 {
			if err := b.interleaved(ctx, m, benchtime, out); err != nil {
				return err
			}
			continue
		}
		if err := b.sh(ctx, out, "go", "test", "-run", "^$", "-bench", m.bench,
			"-benchtime", benchtime, "-count", fmt.Sprint(b.s.BenchCount), m.pkg); err != nil {
			return err
		}
	}
	return nil
}

// interleaved runs a comparison's stacks in BenchCount rounds: the test
// binary built once, then in each round every stack once, one invocation
// each, the round's first stack rotating; all of it appended to out in the
// order it ran (the report pairs the stacks round by round).
func (b *runner) interleaved(ctx context.Context, m microBench, benchtime, out string) error {
	bin := filepath.Join(b.results, "bin", m.name+".test")
	if err := b.sh(ctx, "", "go", "test", "-c", "-o", rel(b.root, bin), m.pkg); err != nil {
		return err
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	defer f.Close()
	args := func(stack string) []string {
		return []string{"-test.run", "^$", "-test.bench", m.bench + "/stack=" + stack + "$", "-test.benchtime", benchtime, "-test.count", "1"}
	}
	b.commands = append(b.commands, fmt.Sprintf("%d rounds, each running every stack once in turn (%s; the first one rotating): %s %s >> %s",
		b.s.BenchCount, strings.Join(m.stacks, ", "), rel(b.root, bin), strings.Join(args("<stack>"), " "), rel(b.root, out)))
	for round := range b.s.BenchCount {
		for i := range m.stacks {
			stack := m.stacks[(round+i)%len(m.stacks)]
			line := fmt.Sprintf("[round %d/%d] %s %s >> %s", round+1, b.s.BenchCount, rel(b.root, bin), strings.Join(args(stack), " "), rel(b.root, out))
			if err := b.exec(ctx, f, line, bin, args(stack)...); err != nil {
				return err
			}
		}
	}
	return f.Close()
}

// stat compares the microbenchmark runs with benchstat (installed into
// ./bin by make bench).
func (b *runner) stat(ctx context.Context) error {
	benchstat := filepath.Join(b.root, "bin", "benchstat")
	if _, err := os.Stat(benchstat); err != nil {
		b.logf("no %s (make bench installs it): benchstat tables skipped", rel(b.root, benchstat))
		return nil
	}
	for _, m := range b.micros {
		args := []string{}
		if m.col != "" {
			args = append(args, "-col", m.col)
		}
		args = append(args, rel(b.root, filepath.Join(b.results, m.name+".txt")))
		if err := b.sh(ctx, filepath.Join(b.results, m.name+".benchstat"), rel(b.root, benchstat), args...); err != nil {
			return err
		}
	}
	return nil
}

func (b *runner) service(ctx context.Context) error {
	var (
		res  []servicepath.Result
		runs []string
	)
	for _, run := range b.s.ServiceRuns {
		dir := filepath.Join(b.work, fmt.Sprintf("system-%g-%t", run.sampling, run.plaintext))
		b.logf("service path: starting the local system (sampling %g, plaintext %t), %g checkouts/s for %s", run.sampling, run.plaintext, b.s.Rate, b.s.Duration)
		r, err := servicepath.Run(ctx, servicepath.Options{Dir: dir, Rate: b.s.Rate, Duration: b.s.Duration, Sampling: run.sampling, Plaintext: run.plaintext})
		if err != nil {
			return fmt.Errorf("service path (sampling %g, plaintext %t): %w", run.sampling, run.plaintext, err)
		}
		b.logf("service path: %d/%d ok, %.1f/s, p50 %.1fms p99 %.1fms", r.OK, r.Sent, r.Throughput, r.P50Ms, r.P99Ms)
		res = append(res, r)
		mesh := "mTLS"
		if run.plaintext {
			mesh = "plaintext"
		}
		runs = append(runs, fmt.Sprintf("sampling %g with %s", run.sampling, mesh))
	}
	b.commands = append(b.commands, fmt.Sprintf("servicepath.Run (from this command): rate %g/s, duration %s, %s > %s",
		b.s.Rate, b.s.Duration, strings.Join(runs, ", "), rel(b.root, filepath.Join(b.results, "servicepath.json"))))
	return writeJSON(filepath.Join(b.results, "servicepath.json"), res)
}

// saveCommands writes the commands a part ran, so the report can list
// what produced each file.
func (b *runner) saveCommands(part string) error {
	if len(b.commands) == 0 {
		return nil
	}
	path := filepath.Join(b.results, "commands-"+part+".txt")
	err := os.WriteFile(path, []byte(strings.Join(b.commands, "\n")+"\n"), 0o644)
	b.commands = nil
	return err
}

func writeJSON(path string, v any) error {
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}
