package meshclient

import (
	"context"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// egress is a stand-in for the sidecar's egress listener: a gRPC server
// that records the :authority and trace header of each call.
type egress struct {
	healthpb.UnimplementedHealthServer
	calls chan metadata.MD
	block bool
}

func (e *egress) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	e.calls <- md
	if e.block {
		<-ctx.Done()
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func startEgress(t *testing.T, e *egress) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, e)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return "http://" + ln.Addr().String()
}

func newClient(t *testing.T, cfg Config) (*Client, *prometheus.Registry, *tracetest.InMemoryExporter) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 1, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	cfg.Telemetry, cfg.Metrics, cfg.Logger = tel, reg, slog.New(slog.DiscardHandler)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, reg, exp
}

func TestSidecarModeSendsToTheEgressWithTheUpstreamAsAuthority(t *testing.T) {
	e := &egress{calls: make(chan metadata.MD, 1)}
	url := startEgress(t, e)
	c, reg, exp := newClient(t, Config{Mode: Sidecar, EgressURL: url, Upstreams: []string{"user"}})

	conn, err := c.Conn("user")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{}); err != nil {
		t.Fatal(err)
	}
	md := <-e.calls
	if got := md.Get(":authority"); len(got) != 1 || got[0] != "user" {
		t.Errorf(":authority = %v, want [user]", got)
	}
	if len(md.Get("traceparent")) != 1 {
		t.Errorf("no traceparent in %v", md)
	}
	if err := c.cfg.Telemetry.TracerProvider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Name != "grpc.health.v1.Health/Check" {
		t.Errorf("client spans = %v", spans)
	}
	if n := testutil.CollectAndCount(reg, "grpc_client_handled_total"); n != 1 {
		t.Errorf("grpc_client_handled_total has %d series, want 1", n)
	}
}

func TestCallsHaveTheClientsDeadline(t *testing.T) {
	e := &egress{calls: make(chan metadata.MD, 1), block: true}
	url := startEgress(t, e)
	c, _, _ := newClient(t, Config{Mode: Sidecar, EgressURL: url, Upstreams: []string{"user"}, Timeout: 100 * time.Millisecond})
	conn, _ := c.Conn("user")
	_, err := healthpb.NewHealthClient(conn).Check(context.Background(), &healthpb.HealthCheckRequest{})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DeadlineExceeded", err)
	}
	if e := errs.As(errs.FromGRPC(err)); e.Kind != errs.Unavailable || e.Code != "upstream_timeout" {
		t.Errorf("FromGRPC = %v, want Unavailable upstream_timeout", e)
	}
}

func TestUndeclaredUpstreamIsRefused(t *testing.T) {
	c, _, _ := newClient(t, Config{Mode: Proxyless, Upstreams: []string{"user"}})
	if _, err := c.Conn("payment"); errs.As(err).Code != "undeclared_upstream" {
		t.Fatalf("Conn(payment) = %v, want undeclared_upstream", err)
	}
}

func TestBadConfigIsRefused(t *testing.T) {
	for name, cfg := range map[string]Config{
		"unknown mode":   {Mode: "direct"},
		"no egress URL":  {Mode: Sidecar},
		"egress not URL": {Mode: Sidecar, EgressURL: "127.0.0.1:15001"},
	} {
		cfg.Metrics, cfg.Logger = prometheus.NewRegistry(), slog.New(slog.DiscardHandler)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New accepted %+v", name, cfg)
		}
	}
}
