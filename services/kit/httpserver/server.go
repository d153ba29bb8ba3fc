// Package httpserver runs a Meshop service's HTTP server and its lifecycle:
//
//	listen ──▶ serve (/ready 503 "starting") ──▶ registered in Consul ──▶ /ready 200
//	stop   ──▶ /ready 503 "draining" ──▶ drain in-flight requests ──▶ deregister ──▶ return
//
// Every server answers /health (liveness), /ready and /metrics (Prometheus)
// next to the app's own routes. App routes are traced with otelhttp, the
// span named after the matched ServeMux pattern ("GET /orders/{id}") and,
// when it is recorded, carrying it as http.route ("/orders/{id}"). The
// sampler decides before otelhttp runs: a request whose span is dropped
// is served with the span's context alone, without otelhttp's work.
package httpserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshop/meshop/services/kit/telemetry"
)

// Registrar puts the instance into service discovery and takes it out.
type Registrar interface {
	Register(ctx context.Context) error
	Deregister(ctx context.Context) error
}

// Config is what a Server needs.
type Config struct {
	Service   string
	Routes    *http.ServeMux       // the app's routes
	Metrics   *prometheus.Registry // served at /metrics
	Telemetry *telemetry.Telemetry // traces app routes
	Logger    *slog.Logger
	// DrainTimeout bounds how long shutdown waits for in-flight requests.
	DrainTimeout time.Duration
	// Serving, when set, must also report true before /ready answers 200:
	// the app's gRPC server, which in proxyless mode serves only once the
	// control plane has configured it.
	Serving func() bool
}

// Server serves one service's HTTP API.
type Server struct {
	cfg     Config
	state   atomic.Int32
	handler http.Handler
	logger  *slog.Logger
}

const (
	starting int32 = iota
	ready
	draining
)

// New builds the server's handler; nothing listens until Run.
func New(cfg Config) *Server {
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, logger: cfg.Logger.With("component", "httpserver")}
	traced := newTracedRoutes(cfg.Telemetry, withRoute(cfg.Routes))
	metrics := promhttp.HandlerFor(cfg.Metrics, promhttp.HandlerOpts{Registry: cfg.Metrics})
	// GET (and HEAD) /health, /ready and /metrics are answered here,
	// untraced; everything else goes to the traced app routes. A plain
	// switch rather than a second ServeMux: an app request is routed once,
	// by the app's own mux.
	s.handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			switch r.URL.Path {
			case "/health":
				s.health(w, r)
				return
			case "/ready":
				s.readiness(w, r)
				return
			case "/metrics":
				metrics.ServeHTTP(w, r)
				return
			}
		}
		traced.ServeHTTP(w, r)
	})
	return s
}

// withRoute serves routes and then puts the matched route on the request's
// span, if it is recorded: otelhttp reads http.route before the app's mux
// has matched the request, so it cannot.
func withRoute(routes *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		routes.ServeHTTP(w, r) // sets r.Pattern
		if span := trace.SpanFromContext(r.Context()); r.Pattern != "" && span.IsRecording() {
			// The path part, as otelhttp's metrics label it:
			// "GET /orders/{id}" → "/orders/{id}", "GET host/x" → "/x".
			if i := strings.IndexByte(r.Pattern, '/'); i >= 0 {
				span.SetAttributes(attribute.String("http.route", r.Pattern[i:]))
			}
		}
	})
}

// Handler is the whole server handler (app routes plus /health, /ready,
// /metrics), for tests that drive it without a listener.
func (s *Server) Handler() http.Handler { return s.handler }

// Ready reports whether /ready answers 200.
func (s *Server) Ready() bool {
	return s.state.Load() == ready && (s.cfg.Serving == nil || s.cfg.Serving())
}

func (s *Server) health(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "service": s.cfg.Service})
}

func (s *Server) readiness(w http.ResponseWriter, _ *http.Request) {
	switch state := s.state.Load(); {
	case state == ready && s.Ready():
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready", "service": s.cfg.Service})
	case state == ready:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "grpc_not_serving", "service": s.cfg.Service})
	case state == draining:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "draining", "service": s.cfg.Service})
	default:
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "starting", "service": s.cfg.Service})
	}
}

// Run serves on ln, registers through reg (retrying until it succeeds) and
// turns ready once registered. When ctx ends it drains and deregisters, in
// the order of DESIGN §5, and returns. It returns early only if serving
// fails.
func (s *Server) Run(ctx context.Context, ln net.Listener, reg Registrar) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       90 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	s.logger.Info("serving", "addr", ln.Addr().String())

	regCtx, stopRegistering := context.WithCancel(ctx)
	defer stopRegistering()
	registered := make(chan error, 1)
	go func() {
		err := reg.Register(regCtx)
		if err == nil {
			s.state.CompareAndSwap(starting, ready)
		}
		registered <- err
	}()

	select {
	case err := <-served:
		stopRegistering()
		if regErr := <-registered; regErr == nil {
			s.deregister(reg)
		}
		return fmt.Errorf("httpserver: serve: %w", err)
	case <-ctx.Done():
	}

	s.state.Store(draining)
	stopRegistering()
	regErr := <-registered
	s.logger.Info("draining in-flight requests", "timeout", s.cfg.DrainTimeout.String())
	drainCtx, cancel := context.WithTimeout(context.Background(), s.cfg.DrainTimeout)
	defer cancel()
	err := srv.Shutdown(drainCtx)
	if err != nil {
		err = fmt.Errorf("httpserver: drain: %w", err)
	}
	if regErr == nil {
		s.deregister(reg)
	}
	if serr := <-served; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

func (s *Server) deregister(reg Registrar) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := reg.Deregister(ctx); err != nil {
		s.logger.Error("deregistration failed; Consul removes the instance when its check goes critical", "err", err)
	}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
