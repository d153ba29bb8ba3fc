package rpc

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-kit/kit/endpoint"
	grpctransport "github.com/go-kit/kit/transport/grpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/telemetry"
	"github.com/meshop/meshop/services/kit/workload"
)

// failer is an endpoint response carrying a domain error, as services'
// responses do.
type failer struct{ err error }

func (f failer) Failed() error { return f.err }

var _ endpoint.Failer = failer{}

// checker serves Health.Check through go-kit's gRPC transport with
// EncodeResponse, answering with the error the test sets.
type checker struct {
	healthpb.UnimplementedHealthServer
	handler grpctransport.Handler
}

func (c checker) Check(ctx context.Context, req *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	_, resp, err := c.handler.ServeGRPC(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.(*healthpb.HealthCheckResponse), nil
}

func startServer(t *testing.T, answer func(service string) (any, error)) (*Server, *grpc.ClientConn, context.CancelFunc, chan error, *prometheus.Registry) {
	t.Helper()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "user", SampleRate: 1, Exporter: tracetest.NewInMemoryExporter()})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	s, err := NewServer(ServerConfig{Service: "user", Telemetry: tel, Metrics: reg, Logger: slog.New(slog.DiscardHandler), DrainTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	// A second Health service under another name, served by go-kit.
	desc := healthpb.Health_ServiceDesc
	desc.ServiceName = "meshop.test.v1.Checker"
	s.RegisterService(&desc, checker{handler: grpctransport.NewServer(
		func(_ context.Context, req any) (any, error) {
			return answer(req.(*healthpb.HealthCheckRequest).GetService())
		},
		func(_ context.Context, req any) (any, error) { return req, nil },
		EncodeResponse(func(_ context.Context, resp any) (any, error) { return resp, nil }),
	)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, conn, cancel, done, reg
}

// check calls the go-kit served Checker, asking it to answer as service says.
func check(conn *grpc.ClientConn, service string) error {
	return conn.Invoke(context.Background(), "/meshop.test.v1.Checker/Check",
		&healthpb.HealthCheckRequest{Service: service}, new(healthpb.HealthCheckResponse))
}

func TestDomainErrorsBecomeStatusesAndPanicsInternal(t *testing.T) {
	_, conn, _, _, reg := startServer(t, func(service string) (any, error) {
		switch service {
		case "declined":
			return failer{errs.New(errs.PaymentDeclined, "card_declined", "the card was declined")}, nil
		case "panic":
			panic("boom")
		}
		return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
	})
	if err := check(conn, "ok"); err != nil {
		t.Fatalf("ok call: %v", err)
	}
	err := check(conn, "declined")
	if status.Code(err) != codes.FailedPrecondition || errs.Reason(errs.FromGRPC(err)) != "CARD_DECLINED" {
		t.Errorf("declined call: %v (reason %q)", err, errs.Reason(errs.FromGRPC(err)))
	}
	if err := check(conn, "panic"); status.Code(err) != codes.Internal {
		t.Errorf("panicking call: %v, want Internal", err)
	}
	if n := testutil.CollectAndCount(reg, "grpc_server_handled_total"); n != 3 {
		t.Errorf("grpc_server_handled_total has %d series, want 3 (OK, FailedPrecondition, Internal)", n)
	}
}

func TestHealthServesUntilDrained(t *testing.T) {
	s, conn, cancel, done, _ := startServer(t, nil)
	client := healthpb.NewHealthClient(conn)
	resp, err := client.Check(context.Background(), &healthpb.HealthCheckRequest{Service: "meshop.test.v1.Checker"})
	if err != nil || resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("Check = %v, %v; want SERVING", resp, err)
	}
	if !s.Serving() {
		t.Fatal("a sidecar-mode server answering calls does not say it is serving")
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run after cancel: %v", err)
	}
	done <- nil // for the cleanup
	if s.Serving() {
		t.Error("still serving after drain")
	}
}

func TestCheckBootstrapNamesTheProblem(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.json")
	certs := workload.FilesIn(dir)
	if err := WriteBootstrap(good, NewBootstrap("127.0.0.1:18000", "user-1", "user", filepath.Join(dir, "token"), certs)); err != nil {
		t.Fatal(err)
	}
	b, err := CheckBootstrap(good, "user-1", "user")
	if err != nil {
		t.Fatalf("good bootstrap refused: %v", err)
	}
	if b.Files() != certs {
		t.Errorf("the bootstrap's certificate files are %+v, want %+v", b.Files(), certs)
	}
	notJSON := filepath.Join(dir, "bad.json")
	os.WriteFile(notJSON, []byte("{"), 0o644)
	plaintext := filepath.Join(dir, "plaintext.json")
	plain := NewBootstrap("127.0.0.1:18000", "user-1", "user", "token", certs)
	plain.XDSServers[0].ChannelCreds = []BootstrapCreds{{Type: "insecure"}}
	WriteBootstrap(plaintext, plain)
	noCerts := filepath.Join(dir, "nocerts.json")
	plain = NewBootstrap("127.0.0.1:18000", "user-1", "user", "token", certs)
	plain.CertificateProviders = nil
	WriteBootstrap(noCerts, plain)
	for _, tc := range []struct{ path, id, service, want string }{
		{"", "user-1", "user", "needs GRPC_XDS_BOOTSTRAP"},
		{filepath.Join(dir, "missing.json"), "user-1", "user", "no such file"},
		{notJSON, "user-1", "user", "is not JSON"},
		{good, "user-2", "user", `node.id is "user-1", want the instance ID "user-2"`},
		{good, "user-1", "order", `node.cluster is "user"`},
		{plaintext, "user-1", "user", `channel_creds[0] must be "meshop_consul"`},
		{noCerts, "user-1", "user", "certificate_providers.mesh needs certificate_file"},
	} {
		_, err := CheckBootstrap(tc.path, tc.id, tc.service)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("CheckBootstrap(%q, %q, %q) = %v, want one line with %q", tc.path, tc.id, tc.service, err, tc.want)
		}
	}
}

// TestOnlyTheMeshsDenialsCountAsMeshDenials: a PermissionDenied the service
// answers itself is not counted as the mesh's (TestZeroTrust in e2e counts
// one of gRPC's RBAC).
func TestOnlyTheMeshsDenialsCountAsMeshDenials(t *testing.T) {
	_, conn, _, _, reg := startServer(t, func(string) (any, error) {
		return failer{errs.New(errs.Forbidden, "not_yours", "not your order")}, nil
	})
	if err := check(conn, "mine"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want the service's PermissionDenied", err)
	}
	if n := testutil.CollectAndCount(reg, "meshop_grpc_server_mesh_denied_total"); n != 0 {
		t.Errorf("the service's own denial counted as the mesh's (%d series)", n)
	}
}
