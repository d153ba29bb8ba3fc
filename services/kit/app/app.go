// Package app wires the kit into a running service process, so every
// service's main reads the same way and only its own parts differ:
//
//	app.New(spec)      settings from the environment → logger → telemetry →
//	                   Consul client → mesh client → metrics registry → gRPC server
//	app.GRPC           where the service registers its gRPC services
//	app.OpenDB         database from DATABASE_URL, migrations applied
//	app.Run(routes)    listen (HTTP and gRPC) → serve → register in Consul →
//	                   ready once registered and the gRPC server serves;
//	                   SIGINT/SIGTERM → /ready 503 → drain → deregister → exit
//
// Settings are documented in Settings; each is one environment variable.
package app

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/jmoiron/sqlx"
	"github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/consulreg"
	"github.com/meshop/meshop/services/kit/events"
	"github.com/meshop/meshop/services/kit/httpserver"
	"github.com/meshop/meshop/services/kit/instrument"
	kitlog "github.com/meshop/meshop/services/kit/log"
	"github.com/meshop/meshop/services/kit/meshclient"
	"github.com/meshop/meshop/services/kit/rpc"
	"github.com/meshop/meshop/services/kit/sqldb"
	"github.com/meshop/meshop/services/kit/telemetry"
	"github.com/meshop/meshop/services/kit/workload"
)

// Spec is what a service says about itself in code.
type Spec struct {
	Name           string   // Consul service name
	Upstreams      []string // services it calls (mesh_upstreams)
	PublicPrefixes []string // app paths the edge exposes (mesh_public_prefixes)
}

// Settings are a service's environment variables (defaults in brackets).
type Settings struct {
	HTTPAddr        string        // HTTP_ADDR [127.0.0.1:8080]: where the app listens; port 0 picks one
	GRPCAddr        string        // GRPC_ADDR [127.0.0.1:9090]: where the app's gRPC server listens; port 0 picks one
	AdvertiseAddr   string        // ADVERTISE_ADDR [host of HTTP_ADDR]: Consul Address (the sidecar's, in sidecar mode)
	AdvertisePort   int           // ADVERTISE_PORT [the app's port]: Consul Port (sidecar inbound 15006, in sidecar mode)
	InstanceID      string        // INSTANCE_ID [<service>-<random>]: Consul ID and Envoy node id
	Version         string        // SERVICE_VERSION [v1]
	ConsulAddr      string        // CONSUL_HTTP_ADDR [127.0.0.1:8500]: host:port, or https://host:port
	ConsulCACert    string        // CONSUL_CACERT [none]: the CA that signed Consul's HTTPS certificate
	ConsulToken     string        // CONSUL_HTTP_TOKEN [none]: ACL token with this service's service identity
	ConsulTokenFile string        // CONSUL_HTTP_TOKEN_FILE [none]: the same token in a file (wins over CONSUL_HTTP_TOKEN)
	MeshMode        string        // MESH_MODE (required): sidecar or proxyless
	EgressURL       string        // MESH_EGRESS_URL [http://127.0.0.1:15001]: sidecar egress listener
	ExposePort      int           // MESH_EXPOSE_PORT [15021]: the sidecar's plaintext listener for Consul's checks (sidecar mode)
	ControlPlaneURL string        // MESH_CONTROLPLANE_URL [none]: the control plane's debug HTTP base, asked at stop whether it still sends this instance
	WithdrawTimeout time.Duration // WITHDRAW_TIMEOUT [10s]: how long a stop waits for callers to stop being sent this instance
	XDSBootstrap    string        // GRPC_XDS_BOOTSTRAP (proxyless mode, required): gRPC's xDS bootstrap file, see rpc.Bootstrap
	// IdentityFiles are where a proxyless app writes its workload
	// identity: the files of its bootstrap's certificate provider.
	IdentityFiles   workload.Files
	CallTimeout     time.Duration // MESH_CALL_TIMEOUT [2s]: deadline of each call to another service
	DatabaseURL     string        // DATABASE_URL [sqlite:<service>.db]: postgres://... or sqlite:...
	NATSURL         string        // NATS_URL [nats://127.0.0.1:4222]: the events bus (JetStream)
	OTLPEndpoint    string        // OTEL_EXPORTER_OTLP_ENDPOINT [unset: no export], e.g. http://127.0.0.1:4317
	SampleRate      float64       // OTEL_TRACES_SAMPLER_ARG [1.0]: ratio of new traces sampled
	CheckInterval   time.Duration // CHECK_INTERVAL [5s]: Consul HTTP check interval
	CheckTimeout    time.Duration // CHECK_TIMEOUT [2s]
	DeregisterAfter time.Duration // DEREGISTER_AFTER [1m]: DeregisterCriticalServiceAfter
	DrainTimeout    time.Duration // DRAIN_TIMEOUT [10s]: how long shutdown waits for in-flight requests
	LogLevel        slog.Level    // LOG_LEVEL [info]
}

// LoadSettings reads the settings of service svc from r.
func LoadSettings(r *config.Reader, svc string) (Settings, error) {
	s := Settings{
		HTTPAddr:        r.String("HTTP_ADDR", "127.0.0.1:8080"),
		GRPCAddr:        r.String("GRPC_ADDR", "127.0.0.1:9090"),
		AdvertiseAddr:   r.String("ADVERTISE_ADDR", ""),
		AdvertisePort:   r.Int("ADVERTISE_PORT", 0, 1, 65535),
		InstanceID:      r.String("INSTANCE_ID", svc+"-"+randomSuffix()),
		Version:         r.String("SERVICE_VERSION", "v1"),
		ConsulAddr:      r.String("CONSUL_HTTP_ADDR", "127.0.0.1:8500"),
		ConsulCACert:    r.String("CONSUL_CACERT", ""),
		ConsulToken:     r.String("CONSUL_HTTP_TOKEN", ""),
		ConsulTokenFile: r.String("CONSUL_HTTP_TOKEN_FILE", ""),
		MeshMode:        r.OneOf("MESH_MODE", "", meshclient.Sidecar, meshclient.Proxyless),
		EgressURL:       r.String("MESH_EGRESS_URL", "http://127.0.0.1:15001"),
		ExposePort:      r.Int("MESH_EXPOSE_PORT", 15021, 1, 65535),
		ControlPlaneURL: strings.TrimSuffix(r.String("MESH_CONTROLPLANE_URL", ""), "/"),
		WithdrawTimeout: r.Duration("WITHDRAW_TIMEOUT", 10*time.Second),
		XDSBootstrap:    r.String(rpc.BootstrapEnv, ""),
		CallTimeout:     r.Duration("MESH_CALL_TIMEOUT", 2*time.Second),
		DatabaseURL:     r.String("DATABASE_URL", "sqlite:"+svc+".db"),
		NATSURL:         r.String("NATS_URL", "nats://127.0.0.1:4222"),
		OTLPEndpoint:    r.String("OTEL_EXPORTER_OTLP_ENDPOINT", ""),
		SampleRate:      r.Float("OTEL_TRACES_SAMPLER_ARG", 1, 0, 1),
		CheckInterval:   r.Duration("CHECK_INTERVAL", 5*time.Second),
		CheckTimeout:    r.Duration("CHECK_TIMEOUT", 2*time.Second),
		DeregisterAfter: r.Duration("DEREGISTER_AFTER", time.Minute),
		DrainTimeout:    r.Duration("DRAIN_TIMEOUT", 10*time.Second),
	}
	if _, _, err := net.SplitHostPort(s.HTTPAddr); err != nil {
		r.Fail("HTTP_ADDR", "must be host:port, got %q", s.HTTPAddr)
	}
	if _, _, err := net.SplitHostPort(s.GRPCAddr); err != nil {
		r.Fail("GRPC_ADDR", "must be host:port, got %q", s.GRPCAddr)
	}
	if s.MeshMode == meshclient.Proxyless {
		b, err := rpc.CheckBootstrap(s.XDSBootstrap, s.InstanceID, svc)
		if err != nil {
			r.Fail(rpc.BootstrapEnv, "%v", err)
		}
		s.IdentityFiles = b.Files()
	}
	level, err := kitlog.ParseLevel(r.String("LOG_LEVEL", "info"))
	if err != nil {
		r.Fail("LOG_LEVEL", "must be debug, info, warn or error")
	}
	s.LogLevel = level
	return s, r.Err()
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// App is a service process's shared machinery.
type App struct {
	Spec      Spec
	Settings  Settings
	Logger    *slog.Logger
	Telemetry *telemetry.Telemetry
	Consul    *api.Client
	Mesh      *meshclient.Client
	// GRPC is the service's gRPC server: register its gRPC services here
	// before Run. It serves grpc.health.v1.Health already.
	GRPC    *rpc.Server
	Metrics *prometheus.Registry
	// Requests measures the service's methods (see instrument.Endpoint).
	Requests *instrument.Metrics
	// stopIdentity ends the workload identity's watcher (proxyless mode).
	stopIdentity context.CancelFunc
}

// New reads the settings and builds the logger, telemetry, Consul client
// and mesh client of service spec.
func New(ctx context.Context, spec Spec) (*App, error) {
	settings, err := LoadSettings(config.FromEnv(), spec.Name)
	if err != nil {
		return nil, err
	}
	a := &App{Spec: spec, Settings: settings}
	a.Logger = kitlog.New(os.Stdout, spec.Name, settings.LogLevel)
	a.Telemetry, err = telemetry.New(ctx, telemetry.Config{
		Service: spec.Name, Version: settings.Version, InstanceID: settings.InstanceID,
		Endpoint: settings.OTLPEndpoint, SampleRate: settings.SampleRate,
	})
	if err != nil {
		return nil, err
	}
	a.Consul, err = api.NewClient(&api.Config{Address: settings.ConsulAddr, Token: settings.ConsulToken, TokenFile: settings.ConsulTokenFile,
		TLSConfig: api.TLSConfig{CAFile: settings.ConsulCACert}})
	if err != nil {
		return nil, fmt.Errorf("consul client: %w", err)
	}
	a.Metrics = prometheus.NewRegistry()
	a.Metrics.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.Requests = instrument.NewMetrics(a.Metrics, spec.Name)
	if settings.MeshMode == meshclient.Proxyless {
		a.followIdentity(ctx)
	}
	a.Mesh, err = meshclient.New(meshclient.Config{
		Mode: settings.MeshMode, EgressURL: settings.EgressURL, Upstreams: spec.Upstreams,
		Timeout: settings.CallTimeout, Telemetry: a.Telemetry, Metrics: a.Metrics, Logger: a.Logger,
	})
	if err != nil {
		a.stopFollowing()
		return nil, err
	}
	a.GRPC, err = rpc.NewServer(rpc.ServerConfig{
		Service: spec.Name, Proxyless: settings.MeshMode == meshclient.Proxyless,
		Telemetry: a.Telemetry, Metrics: a.Metrics, Logger: a.Logger, DrainTimeout: settings.DrainTimeout,
	})
	if err != nil {
		a.Mesh.Close()
		a.stopFollowing()
		return nil, err
	}
	via := "egress " + settings.EgressURL
	if settings.MeshMode == meshclient.Proxyless {
		via = "xDS bootstrap " + settings.XDSBootstrap
	}
	a.Logger.Warn("mesh mode: "+settings.MeshMode, "instance", settings.InstanceID, "upstreams", spec.Upstreams, "via", via)
	return a, nil
}

// OpenDB opens DATABASE_URL and applies the migration sets in order.
func (a *App) OpenDB(ctx context.Context, migrations ...sqldb.MigrationSet) (*sqlx.DB, error) {
	return sqldb.OpenMigrated(ctx, a.Settings.DatabaseURL, migrations...)
}

// Events connects to the events bus (NATS_URL) and returns it with the
// outbox relay of db; run the relay as an actor and Close the bus at exit.
func (a *App) Events(ctx context.Context, db *sqlx.DB) (*events.Bus, *events.Relay, error) {
	connectCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	bus, err := events.Connect(connectCtx, a.Settings.NATSURL, a.Logger)
	if err != nil {
		return nil, nil, fmt.Errorf("events bus (NATS_URL): %w", err)
	}
	relay := events.NewRelay(events.RelayConfig{DB: db, Bus: bus, Telemetry: a.Telemetry, Logger: a.Logger})
	if err := a.Metrics.Register(events.NewOutboxMetrics(db, a.Spec.Name)); err != nil {
		bus.Close()
		return nil, nil, fmt.Errorf("outbox metrics: %w", err)
	}
	return bus, relay, nil
}

// Actor is a long-running part of the process (an event relay, a consumer):
// Run until ctx ends.
type Actor func(ctx context.Context) error

// Run serves routes and runs actors until SIGINT or SIGTERM, or until one
// of them fails; then it shuts everything down in order and flushes traces.
func (a *App) Run(ctx context.Context, routes *http.ServeMux, actors ...Actor) error {
	defer a.close()
	ln, err := net.Listen("tcp", a.Settings.HTTPAddr)
	if err != nil {
		return fmt.Errorf("listen on HTTP_ADDR %s: %w", a.Settings.HTTPAddr, err)
	}
	grpcLn, err := net.Listen("tcp", a.Settings.GRPCAddr)
	if err != nil {
		ln.Close()
		return fmt.Errorf("listen on GRPC_ADDR %s: %w", a.Settings.GRPCAddr, err)
	}
	server := httpserver.New(httpserver.Config{
		Service: a.Spec.Name, Routes: routes, Metrics: a.Metrics, Telemetry: a.Telemetry,
		Logger: a.Logger, DrainTimeout: a.Settings.DrainTimeout, Serving: a.GRPC.Serving,
	})
	registrar := consulreg.New(a.Consul.Agent(), a.instance(ln.Addr().(*net.TCPAddr), grpcLn.Addr().(*net.TCPAddr)), a.Logger)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var g run.Group
	g.Add(func() error { return server.Run(ctx, ln, registrar) }, func(error) { cancel() })
	g.Add(func() error { return a.GRPC.Run(ctx, grpcLn) }, func(error) { cancel() })
	for _, actor := range actors {
		g.Add(func() error { return actor(ctx) }, func(error) { cancel() })
	}
	g.Add(a.stopOnSignal(ctx, server, registrar))
	err = g.Run()
	if errors.Is(err, run.ErrSignal) {
		a.Logger.Info("stopped", "reason", err.Error())
		return nil
	}
	return err
}

// stopOnSignal is the actor that ends the app on SIGINT or SIGTERM: a
// graceful stop in the mesh's order (issue 12). The instance first leaves
// the mesh (withdraw), still serving; only then do the other actors drain
// (HTTP and gRPC finish in-flight calls) and the registration go.
func (a *App) stopOnSignal(ctx context.Context, server *httpserver.Server, reg *consulreg.Registrar) (func() error, func(error)) {
	ctx, cancel := context.WithCancel(ctx)
	return func() error {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
			defer signal.Stop(sig)
			select {
			case s := <-sig:
				if server.Ready() { // registered: callers may be sent it
					a.withdraw(reg)
				}
				return &run.SignalError{Signal: s}
			case <-ctx.Done():
				return ctx.Err()
			}
		}, func(error) {
			cancel()
		}
}

// withdraw takes the instance out of the mesh before anything drains:
// Consul marks it critical at once (maintenance mode), then the app asks
// the control plane (MESH_CONTROLPLANE_URL) until it no longer sends the
// instance as an endpoint, bounded by WITHDRAW_TIMEOUT. Calls that still
// arrive meanwhile are served.
func (a *App) withdraw(reg *consulreg.Registrar) {
	ctx, cancel := context.WithTimeout(context.Background(), a.Settings.WithdrawTimeout)
	defer cancel()
	if err := reg.Withdraw(ctx); err != nil {
		a.Logger.Warn("could not turn the instance critical in Consul; draining anyway", "err", err)
		return
	}
	if a.Settings.ControlPlaneURL == "" {
		return
	}
	endpoint := a.Settings.ControlPlaneURL + "/debug/endpoints/" + url.PathEscape(a.Settings.InstanceID)
	for {
		sent, err := stillSent(ctx, endpoint)
		if err == nil && !sent {
			a.Logger.Info("the control plane no longer sends this instance; draining")
			return
		}
		select {
		case <-ctx.Done():
			a.Logger.Warn("the control plane still sends this instance (or cannot say); draining anyway",
				"timeout", a.Settings.WithdrawTimeout.String(), "err", err)
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stillSent asks the control plane whether it sends the instance as an
// endpoint (GET /debug/endpoints/<id>).
func stillSent(ctx context.Context, endpoint string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("control plane: %s", resp.Status)
	}
	var body struct{ Endpoint bool }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return false, fmt.Errorf("control plane: %w", err)
	}
	return body.Endpoint, nil
}

// instance is the Consul registration for the bound listeners.
func (a *App) instance(bound, grpcBound *net.TCPAddr) consulreg.Instance {
	s := a.Settings
	addr, port := s.AdvertiseAddr, s.AdvertisePort
	if addr == "" {
		host, _, _ := net.SplitHostPort(s.HTTPAddr)
		addr = host
		if addr == "" || addr == "0.0.0.0" || addr == "::" {
			addr = "127.0.0.1"
		}
	}
	if port == 0 {
		port = bound.Port
	}
	// Consul's checker has no mesh certificate, so it checks over plain
	// HTTP where the mesh lets it: the sidecar's expose listener (which
	// forwards /health and /ready to the app), or the app's own HTTP port
	// in proxyless mode. gRPC readiness is /ready, which follows the gRPC
	// server's serving state.
	checkBase := "http://" + net.JoinHostPort(addr, strconv.Itoa(port))
	if s.MeshMode == meshclient.Sidecar {
		checkBase = "http://" + net.JoinHostPort(addr, strconv.Itoa(s.ExposePort))
	}
	return consulreg.Instance{
		ID: s.InstanceID, Service: a.Spec.Name, Version: s.Version,
		Address: addr, Port: port, AppPort: bound.Port, GRPCPort: grpcBound.Port, ReadyURL: checkBase + "/ready",
		Upstreams: a.Spec.Upstreams, PublicPrefixes: a.Spec.PublicPrefixes,
		CheckURL:      checkBase + "/health",
		CheckInterval: s.CheckInterval, CheckTimeout: s.CheckTimeout, DeregisterAfter: s.DeregisterAfter,
	}
}

// followIdentity keeps the service's workload identity (leaf certificate,
// key and Consul's roots) in the files gRPC's file_watcher certificate
// provider reads. It waits a little for the first, which the xDS client
// and server need for their first connections; without Consul (yet) the
// app starts anyway, as it starts before it can register, and its mesh
// connections succeed once the identity arrives.
func (a *App) followIdentity(ctx context.Context) {
	files := a.Settings.IdentityFiles
	w := workload.NewWatcher(a.Consul, a.Spec.Name, a.Logger)
	a.Metrics.MustRegister(w.ExpiryMetric())
	w.OnChange = func(id *workload.Identity) {
		if err := files.Write(id); err != nil {
			a.Logger.Error("writing the workload identity failed; the previous one stays in force", "err", err)
		}
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	a.stopIdentity = cancel
	go w.Run(wctx)
	readyCtx, cancelReady := context.WithTimeout(ctx, identityWait)
	defer cancelReady()
	if _, err := w.Ready(readyCtx); err != nil {
		a.Logger.Warn("no workload identity yet; mesh calls fail until Consul issues it (does the token carry the service identity?)", "err", err)
	}
}

// identityWait is how long a proxyless app waits for its first leaf
// certificate before it starts anyway.
const identityWait = 5 * time.Second

// stopFollowing ends the identity's watcher, if any.
func (a *App) stopFollowing() {
	if a.stopIdentity != nil {
		a.stopIdentity()
	}
}

func (a *App) close() {
	a.stopFollowing()
	a.Mesh.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.Telemetry.Shutdown(ctx); err != nil {
		a.Logger.Warn("flushing traces failed", "err", err)
	}
}
