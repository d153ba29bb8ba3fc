package consulreg

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/consul/api"
)

func TestRegistration(t *testing.T) {
	in := Instance{
		ID: "order-1a2b", Service: "order", Version: "v1", Address: "10.0.0.5", Port: 15006, AppPort: 8080,
		GRPCPort: 9090, CheckURL: "http://10.0.0.5:15021/health", ReadyURL: "http://10.0.0.5:15021/ready", Upstreams: []string{"user", "product", "payment"}, PublicPrefixes: []string{"/orders"},
		CheckInterval: 2 * time.Second, CheckTimeout: time.Second, DeregisterAfter: time.Minute,
	}
	got := in.Registration()
	want := &api.AgentServiceRegistration{
		ID: "order-1a2b", Name: "order", Tags: []string{"v1"}, Address: "10.0.0.5", Port: 15006,
		Meta: map[string]string{
			"mesh_protocol": "http", "mesh_upstreams": "user,product,payment",
			"mesh_public_prefixes": "/orders", "mesh_app_port": "8080", "version": "v1",
			"mesh_grpc_port": "9090",
		},
		Checks: api.AgentServiceChecks{{
			CheckID: "service:order-1a2b:health", Name: "order /health", HTTP: "http://10.0.0.5:15021/health",
			Method: "GET", Interval: "2s", Timeout: "1s", DeregisterCriticalServiceAfter: "1m0s",
		}, {
			CheckID: "service:order-1a2b:ready", Name: "order /ready", HTTP: "http://10.0.0.5:15021/ready",
			Method: "GET", Interval: "2s", Timeout: "1s", DeregisterCriticalServiceAfter: "1m0s",
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("registration (-want +got):\n%s", diff)
	}
}

// flakyAgent fails the first n registrations.
type flakyAgent struct {
	mu           sync.Mutex
	failures     int
	calls        int
	deregistered []string
	withdrawn    []string
}

func (a *flakyAgent) ServiceRegisterOpts(*api.AgentServiceRegistration, api.ServiceRegisterOpts) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.calls <= a.failures {
		return errors.New("dial tcp 127.0.0.1:8500: connect: connection refused")
	}
	return nil
}

func (a *flakyAgent) EnableServiceMaintenanceOpts(id, _ string, _ *api.QueryOptions) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.withdrawn = append(a.withdrawn, id)
	return nil
}

func (a *flakyAgent) ServiceDeregisterOpts(id string, _ *api.QueryOptions) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.deregistered = append(a.deregistered, id)
	return nil
}

func TestRegisterRetriesAndLogsOnce(t *testing.T) {
	agent := &flakyAgent{failures: 4}
	var logs bytes.Buffer
	r := New(agent, Instance{ID: "user-1", Service: "user"}, slog.New(slog.NewJSONHandler(&logs, nil)))
	r.MinBackoff, r.MaxBackoff = time.Millisecond, 2*time.Millisecond
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	if agent.calls != 5 {
		t.Errorf("calls = %d, want 5", agent.calls)
	}
	if n := strings.Count(logs.String(), "retrying with backoff"); n != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "registered in consul after retries") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

func TestRegisterGivesUpWithContext(t *testing.T) {
	agent := &flakyAgent{failures: 1 << 30}
	r := New(agent, Instance{ID: "user-1", Service: "user"}, slog.New(slog.DiscardHandler))
	r.MinBackoff = time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := r.Register(ctx); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("err = %v, want the last cause", err)
	}
}

func TestDeregister(t *testing.T) {
	agent := &flakyAgent{}
	r := New(agent, Instance{ID: "user-1", Service: "user"}, slog.New(slog.DiscardHandler))
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"user-1"}, agent.deregistered); diff != "" {
		t.Error(diff)
	}
}

// hangingConsul is a Consul agent address that accepts requests and never
// answers them; it counts the requests it got.
func hangingConsul(t *testing.T) (*api.Agent, *atomic.Int32) {
	t.Helper()
	var requests atomic.Int32
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs first: Close waits for handlers
	client, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	return client.Agent(), &requests
}

func TestHangingConsulDoesNotBlockPastTheBound(t *testing.T) {
	agent, requests := hangingConsul(t)
	r := New(agent, Instance{ID: "user-1", Service: "user"}, slog.New(slog.DiscardHandler))
	r.CallTimeout, r.MinBackoff, r.MaxBackoff = 100*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond

	t.Run("register retries each bounded attempt until its context ends", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		err := r.Register(ctx)
		if took := time.Since(start); took > 1500*time.Millisecond {
			t.Errorf("Register returned after %s, want about 1s", took)
		}
		if err == nil || !strings.Contains(err.Error(), "gave up after") {
			t.Errorf("err = %v, want it to give up", err)
		}
		// Unbounded calls would have left one request hanging; each
		// attempt gave up after 100ms, so there were several.
		if n := requests.Load(); n < 4 {
			t.Errorf("consul got %d registrations in 1s, want one per 100ms attempt (at least 4)", n)
		}
	})
	t.Run("deregister gives up after the call timeout", func(t *testing.T) {
		start := time.Now()
		err := r.Deregister(context.Background())
		if took := time.Since(start); took > 600*time.Millisecond {
			t.Errorf("Deregister returned after %s, want about 100ms", took)
		}
		if err == nil || !strings.Contains(err.Error(), "deregister user-1: no answer within 100ms") {
			t.Errorf("err = %v, want the call timeout named", err)
		}
	})
}

func TestRegisterAgainstAnsweringConsul(t *testing.T) {
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, r.Method+" "+r.URL.Path)
		mu.Unlock()
	}))
	defer srv.Close()
	client, err := api.NewClient(&api.Config{Address: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	r := New(client.Agent(), Instance{ID: "user-1", Service: "user"}, slog.New(slog.DiscardHandler))
	if err := r.Register(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := r.Deregister(context.Background()); err != nil {
		t.Fatal(err)
	}
	want := []string{"PUT /v1/agent/service/register", "PUT /v1/agent/service/deregister/user-1"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("requests (-want +got):\n%s", diff)
	}
}

func TestWithdrawTurnsTheInstanceCritical(t *testing.T) {
	agent := &flakyAgent{}
	r := New(agent, Instance{ID: "user-1", Service: "user"}, slog.New(slog.DiscardHandler))
	if err := r.Withdraw(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(agent.withdrawn) != 1 || agent.withdrawn[0] != "user-1" || len(agent.deregistered) != 0 {
		t.Errorf("withdrawn %v, deregistered %v; want user-1 in maintenance, still registered", agent.withdrawn, agent.deregistered)
	}
}
