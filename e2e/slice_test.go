package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/localenv"
)

// TestUserOrderSlice starts real Consul, Jaeger, user and order (direct
// mode) and checks the foundation's promises end to end.
func TestUserOrderSlice(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: system test skipped")
	}
	ctx := context.Background()
	dir := t.TempDir()
	plan, err := system.FreePlan(dir)
	if err != nil {
		t.Fatal(err)
	}
	sys, err := system.Start(ctx, plan, dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		sys.Stop()
		if t.Failed() {
			dumpLogs(t, dir)
		}
	})
	consul, err := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("registered and passing with mesh meta", func(t *testing.T) {
		want := map[string]map[string]string{
			"user":  {"mesh_protocol": "http", "mesh_upstreams": "", "mesh_public_prefixes": "/users", "version": "v1"},
			"order": {"mesh_protocol": "http", "mesh_upstreams": "user", "mesh_public_prefixes": "/orders", "version": "v1"},
		}
		for svc, meta := range want {
			entries := waitPassing(t, consul, svc, 1)
			s := entries[0].Service
			if s.ID != svc+"-local" || s.Port != sys.Instance(svc).Port || s.Address != "127.0.0.1" {
				t.Errorf("%s registration: id=%s address=%s port=%d", svc, s.ID, s.Address, s.Port)
			}
			for k, v := range meta {
				if s.Meta[k] != v {
					t.Errorf("%s meta %s = %q, want %q", svc, k, s.Meta[k], v)
				}
			}
			if s.Meta["mesh_app_port"] != strconv.Itoa(sys.Instance(svc).Port) {
				t.Errorf("%s mesh_app_port = %q", svc, s.Meta["mesh_app_port"])
			}
			if len(s.Tags) == 0 || s.Tags[0] != "v1" {
				t.Errorf("%s tags = %v", svc, s.Tags)
			}
			checks := entries[0].Checks
			var http bool
			for _, c := range checks {
				if c.Type == "http" && c.Status == api.HealthPassing {
					http = true
				}
			}
			if !http {
				t.Errorf("%s has no passing HTTP check: %+v", svc, checks)
			}
		}
	})

	user := call[map[string]any](t, "POST", sys.Instance("user").URL()+"/internal/users", nil,
		`{"email":"ada@example.com","name":"Ada Lovelace"}`, http.StatusCreated)
	userID := user["id"].(string)
	order := call[map[string]any](t, "POST", sys.Instance("order").URL()+"/orders",
		map[string]string{"X-User-ID": userID, "Idempotency-Key": "slice-1"},
		`{"items":[{"product_id":"p-espresso","quantity":2}],"payment":{"card_token":"tok_visa"}}`, http.StatusCreated)
	orderURL := sys.Instance("order").URL() + "/orders/" + order["id"].(string)

	t.Run("order embeds its user, and the trace links order to user", func(t *testing.T) {
		traceID := "4bf92f3577b34da6a3ce929d0e0e" + fmt.Sprintf("%04x", time.Now().UnixNano()&0xffff)
		got := call[map[string]any](t, "GET", orderURL, map[string]string{
			"X-User-ID":   userID,
			"traceparent": "00-" + traceID + "-00f067aa0ba902b7-01",
		}, "", http.StatusOK)
		embedded, _ := got["user"].(map[string]any)
		if embedded["id"] != userID || embedded["email"] != "ada@example.com" {
			t.Errorf("embedded user = %v", got["user"])
		}
		if d, _ := got["degraded"].([]any); len(d) != 0 {
			t.Errorf("degraded = %v, want []", got["degraded"])
		}

		// Spans reach Jaeger through each process's batcher: poll.
		var orderSpan, userSpan *localenv.Span
		var spans []localenv.Span
		deadline := time.Now().Add(30 * time.Second)
		for orderSpan == nil || userSpan == nil {
			if time.Now().After(deadline) {
				t.Fatalf("trace %s lacks the order or user server span; spans: %+v", traceID, spans)
			}
			<-time.After(200 * time.Millisecond)
			spans, err = sys.Jaeger.Trace(ctx, traceID)
			if err != nil {
				t.Fatal(err)
			}
			orderSpan, userSpan = findSpan(spans, "order", "GET /orders/{id}"), findSpan(spans, "user", "GET /users/{id}")
		}
		if !descendsFrom(spans, *userSpan, orderSpan.SpanID) {
			t.Errorf("user server span %s is not below order server span %s: %+v", userSpan.SpanID, orderSpan.SpanID, spans)
		}
		if orderSpan.ParentID() != "00f067aa0ba902b7" {
			t.Errorf("order server span's parent = %q, want the caller's span", orderSpan.ParentID())
		}
	})

	t.Run("user down: order still answers, degraded", func(t *testing.T) {
		if err := sys.StopService("user"); err != nil {
			t.Fatal(err)
		}
		got := call[map[string]any](t, "GET", orderURL, map[string]string{"X-User-ID": userID}, "", http.StatusOK)
		if got["user"] != nil {
			t.Errorf("user = %v, want null", got["user"])
		}
		if d, _ := got["degraded"].([]any); len(d) != 1 || d[0] != "user" {
			t.Errorf("degraded = %v, want [user]", got["degraded"])
		}
	})

	t.Run("graceful stop deregisters", func(t *testing.T) {
		if err := sys.StopService("order"); err != nil {
			t.Fatalf("order did not stop cleanly: %v", err)
		}
		entries, _, err := consul.Health().Service("order", "", false, nil)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 0 {
			t.Errorf("order still in Consul after a graceful stop: %+v", entries[0].Service)
		}
	})
}

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
	if err := sys.Consul.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	port, _ := localenv.FreePort()
	env := sys.Env("user", "user-early", port)
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
	consul, _ := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr()})
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
