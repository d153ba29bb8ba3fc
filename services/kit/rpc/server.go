package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	grpcprom "github.com/grpc-ecosystem/go-grpc-middleware/providers/prometheus"
	"github.com/grpc-ecosystem/go-grpc-middleware/v2/interceptors/recovery"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/xds"

	"github.com/meshop/meshop/services/kit/errs"
	"github.com/meshop/meshop/services/kit/telemetry"
)

// ServerConfig is what a Server needs.
type ServerConfig struct {
	Service string
	// Proxyless makes the server an xDS server: it serves only while the
	// control plane has sent the inbound listener for its address, and
	// reads its xDS bootstrap from GRPC_XDS_BOOTSTRAP (see Bootstrap).
	Proxyless bool
	Telemetry *telemetry.Telemetry
	Metrics   prometheus.Registerer
	Logger    *slog.Logger
	// DrainTimeout bounds how long Run waits for in-flight calls at stop.
	DrainTimeout time.Duration
	// Options are added to the server's own (a test's xDS bootstrap).
	Options []grpc.ServerOption
}

// grpcServer is what grpc.Server and xds.GRPCServer have in common.
type grpcServer interface {
	grpc.ServiceRegistrar
	Serve(net.Listener) error
	GracefulStop()
	Stop()
}

// Server is a service's gRPC server. Register the service's gRPC services
// on it (it is a grpc.ServiceRegistrar), then Run it.
type Server struct {
	cfg     ServerConfig
	srv     grpcServer
	health  *health.Server
	serving atomic.Bool
	logger  *slog.Logger
}

// NewServer builds the server; nothing listens until Run.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 10 * time.Second
	}
	s := &Server{cfg: cfg, health: health.NewServer(), logger: cfg.Logger.With("component", "rpc")}
	metrics := grpcprom.NewServerMetrics(grpcprom.WithServerHandlingTimeHistogram())
	if err := cfg.Metrics.Register(metrics); err != nil {
		return nil, fmt.Errorf("rpc: server metrics: %w", err)
	}
	denials, err := newMeshDenials(cfg.Metrics)
	if err != nil {
		return nil, fmt.Errorf("rpc: server metrics: %w", err)
	}
	opts := append([]grpc.ServerOption{
		grpc.StatsHandler(denials),
		grpc.StatsHandler(otelgrpc.NewServerHandler(
			otelgrpc.WithTracerProvider(cfg.Telemetry.TracerProvider),
			otelgrpc.WithPropagators(cfg.Telemetry.Propagator))),
		grpc.ChainUnaryInterceptor(
			denials.reached,
			metrics.UnaryServerInterceptor(),
			recovery.UnaryServerInterceptor(recovery.WithRecoveryHandlerContext(s.recovered)),
		),
	}, cfg.Options...)
	if cfg.Proxyless {
		// mTLS and RBAC as the control plane's inbound listener says;
		// plaintext only where it sends no security configuration.
		creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
		if err != nil {
			return nil, fmt.Errorf("rpc: xDS credentials: %w", err)
		}
		opts = append(opts, grpc.Creds(creds), xds.ServingModeCallback(s.servingMode))
		srv, err := xds.NewGRPCServer(opts...)
		if err != nil {
			return nil, fmt.Errorf("rpc: xDS server (GRPC_XDS_BOOTSTRAP): %w", err)
		}
		s.srv = srv
	} else {
		s.srv = grpc.NewServer(opts...)
	}
	healthpb.RegisterHealthServer(s.srv, s.health)
	return s, nil
}

// RegisterService implements grpc.ServiceRegistrar.
func (s *Server) RegisterService(desc *grpc.ServiceDesc, impl any) {
	s.srv.RegisterService(desc, impl)
	s.health.SetServingStatus(desc.ServiceName, healthpb.HealthCheckResponse_SERVING)
}

// Serving reports whether the server accepts calls: at once in sidecar
// mode; in proxyless mode only once the control plane sent its listener.
func (s *Server) Serving() bool { return s.serving.Load() }

// servingMode follows an xDS server's serving mode.
func (s *Server) servingMode(addr net.Addr, args xds.ServingModeChangeArgs) {
	serving := args.Mode == connectivity.ServingModeServing
	if s.serving.Swap(serving) != serving || !serving {
		s.logger.Info("xDS serving mode", "addr", addr.String(), "mode", args.Mode.String(), "err", args.Err)
	}
}

// recovered turns a handler's panic into an Internal error, logged once.
func (s *Server) recovered(ctx context.Context, p any) error {
	s.logger.ErrorContext(ctx, "handler panicked", "panic", fmt.Sprint(p))
	return errs.Newf(errs.Internal, "internal", "internal error")
}

// Run serves on ln until ctx ends, then drains: health turns NOT_SERVING
// and in-flight calls get DrainTimeout to finish.
func (s *Server) Run(ctx context.Context, ln net.Listener) error {
	if !s.cfg.Proxyless {
		s.serving.Store(true)
	}
	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(ln) }()
	s.logger.Info("serving gRPC", "addr", ln.Addr().String(), "proxyless", s.cfg.Proxyless)
	select {
	case err := <-served:
		s.serving.Store(false)
		return fmt.Errorf("rpc: serve: %w", err)
	case <-ctx.Done():
	}
	s.serving.Store(false)
	s.health.Shutdown()
	stopped := make(chan struct{})
	go func() { s.srv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(s.cfg.DrainTimeout):
		s.logger.Warn("gRPC drain timed out; closing the remaining calls", "timeout", s.cfg.DrainTimeout.String())
		s.srv.Stop()
	}
	if err := <-served; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("rpc: serve: %w", err)
	}
	return nil
}
