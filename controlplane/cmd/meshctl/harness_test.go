package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/workload"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// system is a real Consul and a real control plane (the binary, started
// as make run starts it) on free ports.
type system struct {
	agent  *consultest.Agent
	consul *localenv.Consul
	debug  string // http://127.0.0.1:<port>
	xds    string
	proc   *localenv.Process
}

var (
	buildOnce sync.Once
	cpBinary  string
	buildErr  error
)

// TestMain removes the control plane binary the tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	if cpBinary != "" {
		_ = os.RemoveAll(filepath.Dir(cpBinary))
	}
	os.Exit(code)
}

// controlPlaneBinary builds cmd/controlplane once per test run.
func controlPlaneBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "meshctl-test-")
		if err != nil {
			buildErr = err
			return
		}
		cpBinary = filepath.Join(dir, "controlplane")
		out, err := exec.Command("go", "build", "-o", cpBinary, "github.com/meshop/meshop/controlplane/cmd/controlplane").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build controlplane: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return cpBinary
}

// startSystem starts Consul and the control plane and waits until the
// control plane is ready.
func startSystem(t *testing.T, register func(*consultest.Agent)) *system {
	t.Helper()
	bin := controlPlaneBinary(t)
	agent, consul := consultest.Start(t)
	if register != nil {
		register(agent)
	}
	token, err := consul.ControlPlaneToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ports, err := localenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	s := &system{agent: agent, consul: consul, xds: "127.0.0.1:" + strconv.Itoa(ports[0]), debug: "http://127.0.0.1:" + strconv.Itoa(ports[1])}
	env := []string{
		"CONSUL_HTTP_ADDR=" + consul.HTTPAddr(),
		"CONSUL_HTTP_TOKEN=" + token,
		"XDS_ADDR=" + s.xds,
		"DEBUG_ADDR=127.0.0.1:" + strconv.Itoa(ports[1]),
		"CONSUL_WAIT=10s",
		"SHUTDOWN_GRACE=2s",
		"CONSUL_SETTLE=1s",
	}
	logPath := filepath.Join(t.TempDir(), "controlplane.log")
	s.proc, err = localenv.StartProcess("controlplane", logPath, env, bin)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.proc.Stop(10 * time.Second); err != nil {
			t.Error(err)
		}
		if t.Failed() {
			t.Logf("control plane log (tail):\n%s", s.proc.Tail(8000))
		}
	})
	poll.Until(t, 30*time.Second, func() (bool, string) {
		if s.proc.Exited() {
			t.Fatalf("control plane exited: %v\n%s", s.proc.ExitError(), s.proc.Tail(4000))
		}
		resp, err := http.Get(s.debug + "/ready")
		if err != nil {
			return false, err.Error()
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, "/ready: " + resp.Status
	})
	return s
}

// envoy connects a simulated Envoy as a real one is bootstrapped: TLS,
// with its service's token.
func (s *system) envoy(t *testing.T, o envoysim.Options) *envoysim.Envoy {
	t.Helper()
	token, err := s.consul.ServiceToken(context.Background(), o.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	o.Token = token
	o.TLS = workload.ClientTLS(func() (*x509.CertPool, error) { return s.roots() }, workload.ControlPlane)
	return envoysim.StartT(t, s.xds, o)
}

func (s *system) roots() (*x509.CertPool, error) {
	roots, _, err := s.agent.Client.Agent().ConnectCARoots(nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots.Roots {
		pool.AppendCertsFromPEM([]byte(r.RootCertPEM))
	}
	return pool, nil
}

// env is the environment meshctl sees: this system, the operator token.
func (s *system) env() map[string]string {
	return map[string]string{
		"MESHCTL_CONTROLPLANE": s.debug,
		"CONSUL_HTTP_ADDR":     "http://" + s.consul.HTTPAddr(),
		"CONSUL_HTTP_TOKEN":    s.consul.ManagementToken(),
	}
}

// result is one meshctl run.
type result struct {
	code           int
	stdout, stderr string
}

// meshctl runs meshctl in-process with env as its whole environment.
func meshctl(env map[string]string, args ...string) result {
	var out, errOut bytes.Buffer
	code := run(args, &out, &errOut, func(k string) string { return env[k] })
	return result{code: code, stdout: out.String(), stderr: errOut.String()}
}

// nodes is the control plane's /debug/nodes, decoded as meshctl does.
func (s *system) nodes(t *testing.T) map[string]*nodeStatus {
	t.Helper()
	resp, err := http.Get(s.debug + "/debug/nodes")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var ans nodesAnswer
	if err := json.NewDecoder(resp.Body).Decode(&ans); err != nil {
		t.Fatal(err)
	}
	out := map[string]*nodeStatus{}
	for i := range ans.Nodes {
		out[ans.Nodes[i].ID] = &ans.Nodes[i]
	}
	return out
}

// waitNode polls until the control plane reports node id in state.
func (s *system) waitNode(t *testing.T, id, state string, types int) {
	t.Helper()
	poll.Until(t, 20*time.Second, func() (bool, string) {
		n := s.nodes(t)[id]
		if n == nil {
			return false, id + " not listed"
		}
		// Every type the node subscribes to must have been answered.
		if len(n.LastSent) < types {
			return false, fmt.Sprintf("%s: %d types sent", id, len(n.LastSent))
		}
		return n.Connected && n.state() == state, fmt.Sprintf("%s: connected %v, state %s", id, n.Connected, n.state())
	})
}

// registerShop registers the six services of DESIGN §2 as they register.
func registerShop(a *consultest.Agent) {
	port := 21000
	reg := func(svc, id, upstreams, prefixes string) {
		port++
		a.Register(consultest.Instance{Service: svc, ID: id, Port: port, AppPort: strconv.Itoa(port + 1000), Upstreams: upstreams, Prefixes: prefixes})
	}
	reg("auth", "auth-1", "user", "/auth")
	reg("user", "user-1", "", "/users")
	reg("product", "product-1", "", "/products")
	reg("order", "order-1", "user,product,payment", "/orders")
	reg("payment", "payment-1", "", "/payments")
	reg("notification", "notification-1", "user", "/notifications")
}

// Normalisations: what changes from run to run.
var normal = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`spiffe://[0-9a-f-]+\.consul`), "spiffe://<TRUST DOMAIN>"},
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`), "<TIME>"},
	{regexp.MustCompile(`127\.0\.0\.1:\d+`), "127.0.0.1:<PORT>"},
	{regexp.MustCompile(`\b[0-9a-f]{8}(/[0-9a-f]{8})?\b`), "<VERSION>"},
	{regexp.MustCompile(`\b[0-9a-f]{64}\b`), "<VERSION>"},
	{regexp.MustCompile(`ModifyIndex \d+`), "ModifyIndex <N>"},
	{regexp.MustCompile(`"?(version_sent|version_acked|kept_version|version)"?: "?[0-9a-f]{64}"?`), "$1: <VERSION>"},
	{regexp.MustCompile(`(\S)[ \t]{2,}`), "$1  "}, // column widths follow the normalised cells
}

// lastSeen is proxy-status's LAST SEEN cell: the table has no other
// duration (elsewhere durations are configuration, not time passing).
var lastSeen = regexp.MustCompile(`( )\d+[smhd]( )`)

func normalise(s string) string {
	for _, n := range normal {
		s = n.re.ReplaceAllString(s, n.with)
	}
	return s
}

// golden compares got (normalised) with testdata/<name>.golden.
func golden(t *testing.T, name, got string) {
	t.Helper()
	if testing.Verbose() {
		t.Logf("meshctl output %s (before normalising):\n%s", name, got)
	}
	got = normalise(got)
	path := filepath.Join("testdata", name+".golden")
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (go test ./cmd/meshctl -update writes it)", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

// mustCode checks a run's exit code, showing its output otherwise.
func mustCode(t *testing.T, r result, want int, args ...string) {
	t.Helper()
	if r.code != want {
		t.Fatalf("meshctl %s: exit %d, want %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), r.code, want, r.stdout, r.stderr)
	}
}

// kv reads a key as the operator.
func (s *system) kv(t *testing.T, key string) *api.KVPair {
	t.Helper()
	p, _, err := s.agent.Client.KV().Get(key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}
