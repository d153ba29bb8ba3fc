package consulreg

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
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
}

func (a *flakyAgent) ServiceRegister(*api.AgentServiceRegistration) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	if a.calls <= a.failures {
		return errors.New("dial tcp 127.0.0.1:8500: connect: connection refused")
	}
	return nil
}

func (a *flakyAgent) ServiceDeregister(id string) error {
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
