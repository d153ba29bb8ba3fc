package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/localenv"
)

// TestRegistrationWaitsForConsul starts a service before Consul exists: it
// serves /health at once, answers /ready 503 until it could register, and
// registers by itself once Consul is up.
func TestRegistrationWaitsForConsul(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: system test skipped")
	}
	ctx := context.Background()
	dir := t.TempDir()
	plan, err := system.FreePlan(dir)
	if err != nil {
		t.Fatal(err)
	}
	// Build only; start Consul later on the planned ports.
	sys, err := system.Start(ctx, plan, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sys.Stop() })
	ports, err := localenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	port := ports[0]
	// The instance's Consul token is created while Consul is still up.
	env, err := sys.Env(ctx, "user", "user-early", port, ports[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := sys.Consul.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	p, err := localenv.StartProcess("user-early", filepath.Join(dir, "logs", "user-early.log"), env, filepath.Join(dir, "bin", "user"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Stop(10 * time.Second) })
	base := "http://127.0.0.1:" + strconv.Itoa(port)
	waitCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := p.WaitHTTP(waitCtx, base+"/health", 200); err != nil {
		t.Fatal(err)
	}
	if status := statusOf(t, base+"/ready"); status != 503 {
		t.Fatalf("/ready = %d before Consul is up, want 503", status)
	}
	if err := sys.Consul.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := p.WaitHTTP(waitCtx, base+"/ready", 200); err != nil {
		t.Fatalf("never became ready after Consul came up: %v\n%s", err, p.Tail(2000))
	}
	consul, _ := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr(), Token: sys.Consul.ManagementToken()})
	svcs, err := consul.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := svcs["user-early"]; !ok {
		t.Errorf("user-early not registered: %v", svcs)
	}
}

// call sends a request and decodes the JSON answer, which must have status want.
func call[T any](t *testing.T, method, url string, header map[string]string, body string, want int) T {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewBufferString(body))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		t.Fatalf("%s %s = %d %s, want %d", method, url, resp.StatusCode, raw, want)
	}
	var out T
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %v in %q", method, url, err, raw)
	}
	return out
}

func statusOf(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// waitPassing polls Consul until svc has n passing instances.
func waitPassing(t *testing.T, consul *api.Client, svc string, n int) []*api.ServiceEntry {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		entries, _, err := consul.Health().Service(svc, "", true, nil)
		if err == nil && len(entries) == n {
			return entries
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: want %d passing instances, have %d (err %v)", svc, n, len(entries), err)
		}
		<-time.After(100 * time.Millisecond)
	}
}

func findSpan(spans []localenv.Span, service, operation string) *localenv.Span {
	for i := range spans {
		if spans[i].Service == service && spans[i].OperationName == operation {
			return &spans[i]
		}
	}
	return nil
}

// descendsFrom reports whether ancestorID is on s's chain of parents.
func descendsFrom(spans []localenv.Span, s localenv.Span, ancestorID string) bool {
	byID := map[string]localenv.Span{}
	for _, sp := range spans {
		byID[sp.SpanID] = sp
	}
	for range len(spans) {
		parent := s.ParentID()
		if parent == ancestorID {
			return true
		}
		next, ok := byID[parent]
		if !ok {
			return false
		}
		s = next
	}
	return false
}

func dumpLogs(t *testing.T, dir string) {
	logs, _ := filepath.Glob(filepath.Join(dir, "logs", "*.log"))
	for _, l := range logs {
		b, _ := os.ReadFile(l)
		if len(b) > 3000 {
			b = b[len(b)-3000:]
		}
		t.Logf("--- %s (tail)\n%s", filepath.Base(l), b)
	}
}

// eventually polls cond until it holds, failing the test with cond's last
// word after within.
func eventually(t *testing.T, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, why := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, why)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// startSystem starts the whole local system on free ports for a system
// test (skipped with -short), configure adjusting its plan first (nil: as
// planned), and stops it at the test's end, printing its logs if the test
// failed.
func startSystem(t *testing.T, configure func(*system.Plan)) *system.System {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: system test skipped")
	}
	dir := t.TempDir()
	plan, err := system.FreePlan(dir)
	if err != nil {
		t.Fatal(err)
	}
	if configure != nil {
		configure(&plan)
	}
	sys, err := system.Start(context.Background(), plan, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sys.Stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	return sys
}

// failpointBuild builds svc with its test-only failpoints (-tags
// failpoints: ORDER_CRASH_AT, PAYMENT_FAIL_AT) into the system's
// directory and returns the binary's path.
func failpointBuild(t *testing.T, sys *system.System, svc string) string {
	t.Helper()
	root, err := localenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(sys.Dir, "failpoints", svc)
	build := exec.Command("go", "build", "-tags", "failpoints", "-o", bin, "./services/"+svc+"/cmd/"+svc)
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("building %s with failpoints: %v\n%s", svc, err, out)
	}
	return bin
}

// oneConfirmationEach waits until bearer's notifications hold exactly one
// order.confirmed email for each order in orders (label → order id):
// every event published at least once, its effect applied once.
func oneConfirmationEach(t *testing.T, sys *system.System, bearer string, orders map[string]string) {
	t.Helper()
	eventually(t, 90*time.Second, func() (bool, string) {
		page := call[map[string]any](t, "GET", sys.Instance("notification").URL()+"/notifications?limit=100",
			map[string]string{"Authorization": bearer}, "", http.StatusOK)
		confirmations := map[string]int{}
		for _, it := range page["items"].([]any) {
			n := it.(map[string]any)
			for label, id := range orders {
				if n["event_type"] == "order.confirmed" && strings.Contains(n["body"].(string), id) {
					confirmations[label]++
				}
			}
		}
		for label := range orders {
			if confirmations[label] != 1 {
				return false, fmt.Sprintf("confirmation emails of %d orders: %v", len(orders), confirmations)
			}
		}
		return true, ""
	})
}
