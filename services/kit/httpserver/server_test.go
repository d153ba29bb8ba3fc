package httpserver

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshop/meshop/services/kit/telemetry"
)

// fakeRegistrar records calls; Register blocks until allowed.
type fakeRegistrar struct {
	allow chan struct{}
	mu    sync.Mutex
	calls []string
}

func (f *fakeRegistrar) Register(ctx context.Context) error {
	select {
	case <-f.allow:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.record("register")
	return nil
}

func (f *fakeRegistrar) Deregister(context.Context) error { f.record("deregister"); return nil }

func (f *fakeRegistrar) record(s string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, s)
}

func (f *fakeRegistrar) got() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newTestServer(t *testing.T, routes *http.ServeMux) *Server {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	return New(Config{Service: "order", Routes: routes, Metrics: prometheus.NewRegistry(),
		Telemetry: tel, Logger: slog.New(slog.DiscardHandler), DrainTimeout: 5 * time.Second})
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

func TestLifecycle(t *testing.T) {
	inFlight := make(chan struct{})
	release := make(chan struct{})
	routes := http.NewServeMux()
	routes.HandleFunc("GET /slow", func(w http.ResponseWriter, r *http.Request) {
		close(inFlight)
		<-release
		io.WriteString(w, "done")
	})
	s := newTestServer(t, routes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	reg := &fakeRegistrar{allow: make(chan struct{})}
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx, ln, reg) }()

	// Before registration: alive but not ready.
	if code, body := get(t, base+"/health"); code != 200 || !strings.Contains(body, `"service":"order"`) {
		t.Fatalf("/health = %d %s", code, body)
	}
	if code, body := get(t, base+"/ready"); code != 503 || !strings.Contains(body, "starting") {
		t.Fatalf("/ready before registration = %d %s", code, body)
	}
	close(reg.allow)
	waitFor(t, "ready", s.Ready)

	// A request in flight when the stop comes is completed, not cut.
	slow := make(chan string, 1)
	go func() { _, body := get(t, base+"/slow"); slow <- body }()
	<-inFlight
	stop()
	waitFor(t, "draining", func() bool { return !s.Ready() })
	close(release)
	if body := <-slow; body != "done" {
		t.Errorf("in-flight request got %q", body)
	}
	if err := <-ran; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if got := reg.got(); strings.Join(got, ",") != "register,deregister" {
		t.Errorf("registrar calls = %v", got)
	}
}

func TestJSONErrorForUnknownRoute(t *testing.T) {
	routes := http.NewServeMux()
	routes.HandleFunc("/", NotFound)
	srv := newTestServer(t, routes)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	go http.Serve(ln, srv.Handler())
	code, body := get(t, "http://"+ln.Addr().String()+"/nope")
	var e struct{ Error struct{ Code string } }
	if code != 404 || json.Unmarshal([]byte(body), &e) != nil || e.Error.Code != "no_route" {
		t.Errorf("got %d %s", code, body)
	}
	if code, body := get(t, "http://"+ln.Addr().String()+"/metrics"); code != 200 {
		t.Errorf("/metrics = %d %s", code, body)
	}
}

// TestTracingAndRouting checks what the server traces and how: app
// requests get one span each, named after the route pattern they matched
// and joined to the caller's trace (W3C traceparent); /health, /ready and
// /metrics answer GET and HEAD untraced, other methods on them go to the
// app.
func TestTracingAndRouting(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	// Ratio 0: only the spans of sampled callers are recorded.
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 0, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	routes := http.NewServeMux()
	ok := func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.PathValue("id")) }
	routes.HandleFunc("POST /echo", ok)
	routes.HandleFunc("GET /orders/{id}", ok)
	handler := New(Config{Service: "order", Routes: routes, Metrics: prometheus.NewRegistry(),
		Telemetry: tel, Logger: slog.New(slog.DiscardHandler)}).Handler()

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	for _, tt := range []struct {
		method, path string
		wantCode     int
		wantBody     string
		wantSpan     string // "" for untraced
		wantRoute    string // the span's http.route ("" for none)
	}{
		{"POST", "/echo", 200, "", "POST /echo", "/echo"},
		{"GET", "/orders/42", 200, "42", "GET /orders/{id}", "/orders/{id}"},
		{"DELETE", "/nowhere", 404, "", "DELETE unmatched", ""},
		{"GET", "/health", 200, `"status":"ok"`, "", ""},
		{"HEAD", "/health", 200, "", "", ""},
		{"GET", "/ready", 503, `"status":"starting"`, "", ""},
		{"GET", "/metrics", 200, "", "", ""},
		{"POST", "/health", 404, "", "POST unmatched", ""},
	} {
		exp.Reset()
		r := httptest.NewRequest(tt.method, tt.path, nil)
		r.Header.Set("traceparent", "00-"+traceID+"-00f067aa0ba902b7-01")
		w := httptest.NewRecorder()
		handler.ServeHTTP(w, r)
		if w.Code != tt.wantCode || !strings.Contains(w.Body.String(), tt.wantBody) {
			t.Errorf("%s %s = %d %q, want %d with %q", tt.method, tt.path, w.Code, w.Body.String(), tt.wantCode, tt.wantBody)
		}
		if err := tel.TracerProvider.ForceFlush(context.Background()); err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range exp.GetSpans() {
			names = append(names, s.Name)
			if s.SpanContext.TraceID().String() != traceID {
				t.Errorf("%s %s: span in trace %s, not the caller's", tt.method, tt.path, s.SpanContext.TraceID())
			}
			route := ""
			for _, a := range s.Attributes {
				if a.Key == "http.route" {
					route = a.Value.AsString()
				}
			}
			if route != tt.wantRoute {
				t.Errorf("%s %s: http.route %q, want %q", tt.method, tt.path, route, tt.wantRoute)
			}
		}
		if want := []string{tt.wantSpan}; tt.wantSpan == "" && len(names) != 0 || tt.wantSpan != "" && !slices.Equal(names, want) {
			t.Errorf("%s %s: spans %q, want %q", tt.method, tt.path, names, tt.wantSpan)
		}
	}
}

func TestNotReadyUntilServingSaysSo(t *testing.T) {
	var serving atomic.Bool
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 1})
	if err != nil {
		t.Fatal(err)
	}
	s := New(Config{Service: "order", Routes: http.NewServeMux(), Metrics: prometheus.NewRegistry(),
		Telemetry: tel, Logger: slog.New(slog.DiscardHandler), Serving: serving.Load})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + ln.Addr().String()
	reg := &fakeRegistrar{allow: make(chan struct{})}
	close(reg.allow)
	ctx, stop := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx, ln, reg) }()
	defer func() { stop(); <-ran }()

	waitFor(t, "registered", func() bool { return len(reg.got()) == 1 })
	if code, body := get(t, base+"/ready"); code != 503 || !strings.Contains(body, "grpc_not_serving") {
		t.Fatalf("/ready while gRPC is not serving = %d %s", code, body)
	}
	serving.Store(true)
	if code, _ := get(t, base+"/ready"); code != 200 {
		t.Fatalf("/ready once gRPC serves = %d", code)
	}
}
