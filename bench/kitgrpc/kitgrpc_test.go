// Package kitgrpc compares the gRPC stack every Meshop app runs (services/kit:
// rpc.Server in sidecar mode, i.e. a grpc.Server with the otelgrpc stats
// handler, the grpc-ecosystem Prometheus server metrics and panic recovery,
// serving a go-kit gRPC handler whose endpoint carries the instrument
// middleware; called through meshclient's connection and an
// rpc.ClientEndpoint, with otelgrpc, the client metrics and the deadline
// on the client side) with a bare grpc.Server and grpc.ClientConn doing the
// same unary call, both over loopback TCP.
//
//	go test -run '^$' -bench . -count 6 ./bench/kitgrpc > grpc.txt
//	benchstat -col /stack grpc.txt
//
// make bench runs the two stacks alternately, one round at a time, and
// reports the throughput ratio of each round (bench/cmd/benchsuite).
package kitgrpc

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/go-kit/kit/endpoint"
	grpctransport "github.com/go-kit/kit/transport/grpc"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshop/meshop/services/kit/instrument"
	kitlog "github.com/meshop/meshop/services/kit/log"
	"github.com/meshop/meshop/services/kit/meshclient"
	"github.com/meshop/meshop/services/kit/rpc"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// The benchmark's gRPC service, meshop.bench.v1.Echo/Greet: a name in, a
// greeting out (wrapperspb.StringValue both ways), described by hand the
// way protoc-gen-go-grpc would, so both stacks serve the same descriptor.
const (
	serviceName = "meshop.bench.v1.Echo"
	fullMethod  = "/" + serviceName + "/Greet"
)

type echoServer interface {
	Greet(context.Context, *wrapperspb.StringValue) (*wrapperspb.StringValue, error)
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: serviceName,
	HandlerType: (*echoServer)(nil),
	Methods: []grpc.MethodDesc{{
		MethodName: "Greet",
		Handler: func(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
			in := new(wrapperspb.StringValue)
			if err := dec(in); err != nil {
				return nil, err
			}
			if interceptor == nil {
				return srv.(echoServer).Greet(ctx, in)
			}
			return interceptor(ctx, in, &grpc.UnaryServerInfo{Server: srv, FullMethod: fullMethod}, func(ctx context.Context, req any) (any, error) {
				return srv.(echoServer).Greet(ctx, req.(*wrapperspb.StringValue))
			})
		},
	}},
	Metadata: "bench/kitgrpc",
}

// greeting is the work both stacks do; as a go-kit response it is a
// service's response type (an endpoint.Failer).
type greeting struct{ Text string }

func (greeting) Failed() error { return nil }

var _ endpoint.Failer = greeting{}

func greet(name string) greeting { return greeting{Text: "hello " + name} }

// bareServer is the baseline's handler: decode is grpc's, then the work.
type bareServer struct{}

func (bareServer) Greet(_ context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	return wrapperspb.String(greet(in.GetValue()).Text), nil
}

// kitServer is the handler as services write it: a go-kit gRPC handler per
// method (see services/payment/transport_grpc.go).
type kitServer struct{ greet grpctransport.Handler }

func (s kitServer) Greet(ctx context.Context, in *wrapperspb.StringValue) (*wrapperspb.StringValue, error) {
	_, resp, err := s.greet.ServeGRPC(ctx, in)
	if err != nil {
		return nil, err
	}
	return resp.(*wrapperspb.StringValue), nil
}

// discard is a span exporter that drops spans: the batching and span
// work is measured, not a collector's network.
type discard struct{}

func (discard) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discard) Shutdown(context.Context) error                             { return nil }

// tracing is one process's telemetry, sampling that ratio of new traces.
func tracing(tb testing.TB, service string, sample float64) *telemetry.Telemetry {
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: service, Version: "v1", InstanceID: service + "-1",
		SampleRate: sample, Exporter: discard{}})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = tel.Shutdown(context.Background()) })
	return tel
}

func listen(tb testing.TB) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	return ln
}

// call is one Greet from the client side of a stack.
type call func(ctx context.Context, name string) (string, error)

// bare serves bareServer on a plain grpc.Server and calls it through a
// plain connection, as generated client code does.
func bare(tb testing.TB) call {
	ln := listen(tb)
	srv := grpc.NewServer()
	srv.RegisterService(&echoDesc, bareServer{})
	go func() { _ = srv.Serve(ln) }()
	tb.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return func(ctx context.Context, name string) (string, error) {
		out := new(wrapperspb.StringValue)
		if err := conn.Invoke(ctx, fullMethod, wrapperspb.String(name), out); err != nil {
			return "", err
		}
		return out.GetValue(), nil
	}
}

// kit is the same call built the way Meshop apps build it. Server: the
// app's rpc.Server (sidecar mode) serving a go-kit handler over an
// endpoint with the instrument middleware, its response encoded through
// rpc.EncodeResponse. Client: meshclient in sidecar mode pointed at the
// server (its "egress"), and an rpc.ClientEndpoint on its connection, as
// a provider's client package does. Server and client are two processes
// in a deployment, so each has its own telemetry and registry.
func kit(tb testing.TB, sample float64) (call, *prometheus.Registry) {
	logger := kitlog.New(io.Discard, "bench", slog.LevelInfo)
	reg := prometheus.NewRegistry()
	srv, err := rpc.NewServer(rpc.ServerConfig{Service: "bench", Telemetry: tracing(tb, "bench", sample), Metrics: reg, Logger: logger})
	if err != nil {
		tb.Fatal(err)
	}
	var ep endpoint.Endpoint = func(_ context.Context, request any) (any, error) {
		return greet(request.(string)), nil
	}
	ep = instrument.Endpoint(logger, instrument.NewMetrics(reg, "bench"), "Greet")(ep)
	srv.RegisterService(&echoDesc, kitServer{greet: grpctransport.NewServer(ep,
		func(_ context.Context, req any) (any, error) { return req.(*wrapperspb.StringValue).GetValue(), nil },
		rpc.EncodeResponse(func(_ context.Context, resp any) (any, error) { return wrapperspb.String(resp.(greeting).Text), nil }),
	)})
	ln := listen(tb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, ln) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			tb.Error(err)
		}
	})

	clientLogger := kitlog.New(io.Discard, "bench-client", slog.LevelInfo)
	mc, err := meshclient.New(meshclient.Config{Mode: meshclient.Sidecar, EgressURL: "http://" + ln.Addr().String(), Upstreams: []string{"echo"},
		Telemetry: tracing(tb, "bench-client", sample), Metrics: prometheus.NewRegistry(), Logger: clientLogger})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(mc.Close)
	conn, err := mc.Conn("echo")
	if err != nil {
		tb.Fatal(err)
	}
	greetEP := rpc.ClientEndpoint(conn, serviceName, "Greet",
		func(_ context.Context, req any) (any, error) { return wrapperspb.String(req.(string)), nil },
		func(_ context.Context, reply any) (any, error) {
			return reply.(*wrapperspb.StringValue).GetValue(), nil
		},
		&wrapperspb.StringValue{})
	return func(ctx context.Context, name string) (string, error) {
		resp, err := greetEP(ctx, name)
		if err != nil {
			return "", err
		}
		return resp.(string), nil
	}, reg
}

// BenchmarkGRPC is one unary Greet round trip over loopback on one
// connection (HTTP/2), from parallel clients (GOMAXPROCS goroutines);
// ns/op is the inverse of throughput. stack=bare is the baseline;
// The kit stacks sample 1% of new traces (the production setting the
// HTTP comparison is held to) or every one; the client's sampling decision
// travels to the server, as between services.
func BenchmarkGRPC(b *testing.B) {
	stacks := []struct {
		name string
		call func(testing.TB) call
	}{
		{"bare", bare},
		{"kit-sample-1pct", func(tb testing.TB) call { c, _ := kit(tb, 0.01); return c }},
		{"kit-sample-100pct", func(tb testing.TB) call { c, _ := kit(tb, 1); return c }},
	}
	for _, s := range stacks {
		b.Run("stack="+s.name, func(b *testing.B) {
			do := s.call(b)
			// The first call connects; it is not measured.
			if _, err := do(context.Background(), "warm-up"); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				ctx := context.Background()
				for pb.Next() {
					got, err := do(ctx, "grace")
					if err != nil {
						b.Error(err)
						return
					}
					if got != "hello grace" {
						b.Errorf("got %q", got)
						return
					}
				}
			})
		})
	}
}

// TestStacksAnswerAlike checks that both stacks answer the benchmark's
// call the same way, and that the kit's server path is the instrumented
// one (its gRPC and per-method metrics counted the call), so the benchmark
// compares like with like.
func TestStacksAnswerAlike(t *testing.T) {
	kitCall, reg := kit(t, 1)
	for name, do := range map[string]call{"bare": bare(t), "kit": kitCall} {
		got, err := do(context.Background(), "grace")
		if err != nil || got != "hello grace" {
			t.Errorf("%s: %q, %v", name, got, err)
		}
	}
	for _, metric := range []string{"grpc_server_handled_total", "meshop_requests_total"} {
		if n := testutil.CollectAndCount(reg, metric); n != 1 {
			t.Errorf("kit server: %s has %d series, want 1", metric, n)
		}
	}
}
