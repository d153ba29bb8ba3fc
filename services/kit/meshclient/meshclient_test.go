package meshclient

import (
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshop/meshop/localenv"
	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/telemetry"
)

func testTelemetry(t *testing.T) (*telemetry.Telemetry, *tracetest.InMemoryExporter) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 1, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	return tel, exp
}

func TestSidecarMode(t *testing.T) {
	var gotHost, gotKey, gotTraceparent string
	egress := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost, gotKey, gotTraceparent = r.Host, r.Header.Get("Idempotency-Key"), r.Header.Get("traceparent")
		switch r.URL.Path {
		case "/users/u1":
			json.NewEncoder(w).Encode(map[string]string{"id": "u1", "name": "Ada"})
		case "/users/missing":
			w.WriteHeader(http.StatusNotFound)
			json.NewEncoder(w).Encode(errs.Body{Error: errs.BodyError{Code: "user_not_found", Message: "no user missing"}})
		case "/slow":
			<-r.Context().Done()
		case "/broken":
			w.WriteHeader(http.StatusBadGateway)
		}
	}))
	defer egress.Close()
	tel, exp := testTelemetry(t)
	c, err := New(Config{Mode: Sidecar, EgressURL: egress.URL, Upstreams: []string{"user"},
		Timeout: 200 * time.Millisecond, Telemetry: tel, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}

	var user struct{ ID, Name string }
	if err := c.Call(context.Background(), "user", "GET", "/users/u1", http.Header{"Idempotency-Key": {"k1"}}, nil, &user); err != nil {
		t.Fatal(err)
	}
	if user.Name != "Ada" || gotHost != "user" || gotKey != "k1" || gotTraceparent == "" {
		t.Errorf("user=%+v host=%q key=%q traceparent=%q", user, gotHost, gotKey, gotTraceparent)
	}
	tel.TracerProvider.ForceFlush(context.Background())
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Name != "GET user" {
		t.Errorf("client spans = %v, want one named \"GET user\"", spans)
	}

	tests := []struct {
		name, service, path string
		wantKind            errs.Kind
		wantCode            string
	}{
		{"upstream error body kept", "user", "/users/missing", errs.NotFound, "user_not_found"},
		{"deadline", "user", "/slow", errs.Unavailable, "upstream_timeout"},
		{"5xx without body", "user", "/broken", errs.Unavailable, "unavailable"},
		{"undeclared upstream", "payment", "/payments", errs.Internal, "undeclared_upstream"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := c.Call(context.Background(), tt.service, "GET", tt.path, nil, nil, nil)
			if e := errs.As(err); err == nil || e.Kind != tt.wantKind || e.Code != tt.wantCode {
				t.Errorf("err = %v, want kind %v code %s", err, tt.wantKind, tt.wantCode)
			}
		})
	}
}

// TestDirectMode runs against a real Consul: two passing instances share
// the load, a critical one gets nothing, and a GET to an instance that
// refuses connections is retried on another.
func TestDirectMode(t *testing.T) {
	consul := localenv.ConsulT(t)
	client, err := api.NewClient(&api.Config{Address: consul.HTTPAddr()})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	hits := map[string]int{}
	serve := func(name string) string {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			hits[name]++
			mu.Unlock()
			json.NewEncoder(w).Encode(map[string]string{"instance": name})
		}))
		t.Cleanup(srv.Close)
		return srv.Listener.Addr().String()
	}
	register := func(id, addr, status string) {
		host, port, _ := net.SplitHostPort(addr)
		p, _ := strconv.Atoi(port)
		err := client.Agent().ServiceRegister(&api.AgentServiceRegistration{ID: id, Name: "user", Address: host, Port: p,
			Check: &api.AgentServiceCheck{CheckID: id + ":ttl", TTL: "1h", Status: status}})
		if err != nil {
			t.Fatal(err)
		}
	}
	register("user-a", serve("a"), api.HealthPassing)
	register("user-b", serve("b"), api.HealthPassing)
	register("user-sick", serve("sick"), api.HealthCritical)
	dead, _ := localenv.FreePort() // nothing listens here
	register("user-dead", "127.0.0.1:"+strconv.Itoa(dead), api.HealthPassing)

	tel, _ := testTelemetry(t)
	c, err := New(Config{Mode: Direct, Consul: client, Upstreams: []string{"user"}, Timeout: 2 * time.Second,
		Retries: 2, Telemetry: tel, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// The watch may still be catching up with the registrations: poll until
	// both live instances have answered, then count a fresh round.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var got struct{ Instance string }
		if err := c.Call(context.Background(), "user", "GET", "/x", nil, nil, &got); err != nil {
			t.Fatalf("GET failed although retries should reach a live instance: %v", err)
		}
		mu.Lock()
		both := hits["a"] > 0 && hits["b"] > 0
		mu.Unlock()
		if both {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("round robin never reached both instances: %v", hits)
		}
	}
	mu.Lock()
	clear(hits)
	mu.Unlock()
	for range 30 {
		if err := c.Call(context.Background(), "user", "GET", "/x", nil, nil, nil); err != nil {
			t.Fatalf("GET: %v", err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if hits["sick"] != 0 || hits["a"] < 5 || hits["b"] < 5 || hits["a"]+hits["b"] != 30 {
		t.Errorf("hits = %v: want 30 answers shared by a and b, none from sick", hits)
	}
}

func TestDirectModeNoInstances(t *testing.T) {
	consul := localenv.ConsulT(t)
	client, _ := api.NewClient(&api.Config{Address: consul.HTTPAddr()})
	tel, _ := testTelemetry(t)
	c, err := New(Config{Mode: Direct, Consul: client, Upstreams: []string{"user"}, Timeout: time.Second,
		Telemetry: tel, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	err = c.Call(context.Background(), "user", "GET", "/users/u1", nil, nil, nil)
	if e := errs.As(err); e.Kind != errs.Unavailable || e.Code != "no_healthy_upstream" {
		t.Errorf("err = %v, want no_healthy_upstream", err)
	}
}
