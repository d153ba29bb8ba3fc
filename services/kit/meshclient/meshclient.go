// Package meshclient is the one way a Meshop service calls another: one
// gRPC connection per declared upstream, dialled as the mesh mode says
// (DESIGN §8), handed to the provider's client package.
//
//	sidecar:   app ──h2c to the egress (127.0.0.1:15001), :authority <service>──▶ Envoy ──▶ upstream
//	proxyless: app ──xds:///<service>──▶ grpc-go's xDS client, configured by our
//	           control plane (endpoints, routes, retries, timeouts, ejection,
//	           mTLS with the workload's identity) ──▶ upstream
//
// One mesh client, two transports; there is no second discovery path.
// Every call has a deadline (the shorter of the caller's and the client's
// timeout), carries the trace context (otelgrpc) and is counted per method
// (grpc_client_handled_total, grpc_client_handling_seconds).
package meshclient

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/url"
	"slices"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	_ "google.golang.org/grpc/xds" // registers the xds:/// resolver and balancers

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// Modes.
const (
	Sidecar   = "sidecar"
	Proxyless = "proxyless"
)

// Config configures a Client.
type Config struct {
	Mode      string // Sidecar or Proxyless
	EgressURL string // sidecar mode: the local Envoy egress listener, e.g. http://127.0.0.1:15001
	Upstreams []string
	Timeout   time.Duration // default deadline of each call
	Telemetry *telemetry.Telemetry
	Metrics   prometheus.Registerer
	Logger    *slog.Logger
	// DialOptions are added to every connection's own (a test's xDS
	// resolver with its bootstrap).
	DialOptions []grpc.DialOption
}

// Client holds the connections to a service's upstreams.
type Client struct {
	cfg   Config
	conns map[string]*grpc.ClientConn
}

// New returns a client with one connection per declared upstream. gRPC
// connects lazily: nothing is dialled before the first call.
func New(cfg Config) (*Client, error) {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	var target func(service string) string
	opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	switch cfg.Mode {
	case Sidecar:
		u, err := url.Parse(cfg.EgressURL)
		if err != nil || u.Host == "" {
			return nil, fmt.Errorf("meshclient: sidecar mode needs the egress URL (http://host:port), got %q", cfg.EgressURL)
		}
		// Envoy routes on :authority, as it routes HTTP on Host.
		target = func(string) string { return "passthrough:///" + u.Host }
	case Proxyless:
		target = func(service string) string { return "xds:///" + service }
		// mTLS as the control plane's clusters say (the workload's
		// identity, the upstream's SPIFFE ID); plaintext only where it
		// sends no security configuration.
		creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("meshclient: xDS credentials: %w", err)
		}
		opts = []grpc.DialOption{grpc.WithTransportCredentials(creds)}
	default:
		return nil, fmt.Errorf("meshclient: unknown mode %q (want %s or %s)", cfg.Mode, Sidecar, Proxyless)
	}
	metrics := grpcprom.NewClientMetrics(grpcprom.WithClientHandlingTimeHistogram())
	if err := cfg.Metrics.Register(metrics); err != nil {
		return nil, fmt.Errorf("meshclient: metrics: %w", err)
	}
	opts = append(opts,
		grpc.WithStatsHandler(otelgrpc.NewClientHandler(
			otelgrpc.WithTracerProvider(cfg.Telemetry.TracerProvider),
			otelgrpc.WithPropagators(cfg.Telemetry.Propagator))),
		grpc.WithChainUnaryInterceptor(deadline(cfg.Timeout), metrics.UnaryClientInterceptor()),
	)
	opts = append(opts, cfg.DialOptions...)

	c := &Client{cfg: cfg, conns: make(map[string]*grpc.ClientConn, len(cfg.Upstreams))}
	for _, svc := range cfg.Upstreams {
		conn, err := grpc.NewClient(target(svc), append(opts, grpc.WithAuthority(svc))...)
		if err != nil {
			c.Close()
			return nil, fmt.Errorf("meshclient: connection to %s: %w", svc, err)
		}
		c.conns[svc] = conn
	}
	return c, nil
}

// Conn is the connection to service, which must be a declared upstream.
func (c *Client) Conn(service string) (*grpc.ClientConn, error) {
	conn, ok := c.conns[service]
	if !ok {
		return nil, errs.Newf(errs.Internal, "undeclared_upstream", "%s is not a declared upstream of this service (declared: %v)",
			service, slices.Sorted(maps.Keys(c.conns)))
	}
	return conn, nil
}

// Close closes every connection.
func (c *Client) Close() {
	var all []error
	for _, conn := range c.conns {
		all = append(all, conn.Close())
	}
	if err := errors.Join(all...); err != nil {
		c.cfg.Logger.Warn("closing upstream connections", "err", err)
	}
}

// deadline bounds every call by timeout, keeping an earlier deadline of the
// caller's.
func deadline(timeout time.Duration) grpc.UnaryClientInterceptor {
	return func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return invoker(ctx, method, req, reply, cc, opts...)
	}
}
