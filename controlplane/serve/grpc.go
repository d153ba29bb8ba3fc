package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// grpcServer is the lifecycle of the ADS gRPC server.
type grpcServer struct {
	mu     sync.Mutex
	ctx    context.Context // ends the xDS streams on Stop
	cancel context.CancelFunc
	srv    *grpc.Server
	// services are registered beside ADS when Serve starts (AddService).
	services []func(grpc.ServiceRegistrar)
}

func (g *grpcServer) init() { g.ctx, g.cancel = context.WithCancel(context.Background()) }

// Serve serves ADS (state of the world and delta), and the services
// added with AddService, on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
	g := &s.grpc
	g.mu.Lock()
	if g.srv != nil {
		g.mu.Unlock()
		return errors.New("serve: already serving")
	}
	if g.ctx.Err() != nil { // stopped before it started
		g.mu.Unlock()
		lis.Close()
		return nil
	}
	g.srv = grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: s.opts.Keepalive, Timeout: 10 * time.Second}),
		// Envoy pings on its own schedule; do not punish it for it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}, s.opts.GRPCOptions...)...)
	xds := serverv3.NewServer(g.ctx, s.cache, callbacks{s.tracker, s})
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g.srv, xds)
	for _, register := range g.services {
		register(g.srv)
	}
	srv := g.srv
	g.mu.Unlock()
	s.log.Info("xDS server listening", "addr", lis.Addr().String())
	if err := srv.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// AddService has Serve register another gRPC service beside ADS, on the
// same port and with the same options (TLS, and xdsauth's check unless the
// service is exempt from it): CSDS (package csds). Call it before Serve.
func (s *Server) AddService(register func(grpc.ServiceRegistrar)) {
	g := &s.grpc
	g.mu.Lock()
	defer g.mu.Unlock()
	g.services = append(g.services, register)
}

// Stop ends every stream (Envoys keep their config and reconnect to
// another instance or to this one after a restart), then stops the gRPC
// server, waiting up to grace for in-flight responses.
func (s *Server) Stop(grace time.Duration) {
	g := &s.grpc
	g.mu.Lock()
	g.cancel()
	srv := g.srv
	g.mu.Unlock()
	if srv == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		srv.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		srv.Stop()
		<-done
	}
	s.log.Info("xDS server stopped")
}

// callbacks are go-control-plane's hooks into the streams: the tracker
// records each stream's conversation, and a node's first request has its
// metadata applied (nodeSeen) before the cache answers it.
type callbacks struct {
	*tracker
	s *Server
}

var _ serverv3.Callbacks = callbacks{}

// OnStreamOpen implements serverv3.Callbacks.
func (c callbacks) OnStreamOpen(ctx context.Context, id int64, typ string) error {
	c.s.streams.opened(ctx, streamKey{false, id})
	return c.tracker.OnStreamOpen(ctx, id, typ)
}

// OnDeltaStreamOpen implements serverv3.Callbacks.
func (c callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typ string) error {
	c.s.streams.opened(ctx, streamKey{true, id})
	return c.tracker.OnDeltaStreamOpen(ctx, id, typ)
}

// OnStreamClosed implements serverv3.Callbacks.
func (c callbacks) OnStreamClosed(id int64, node *corev3.Node) {
	c.s.streams.closed(c.s.opts.Identities, streamKey{false, id})
	c.tracker.OnStreamClosed(id, node)
}

// OnDeltaStreamClosed implements serverv3.Callbacks.
func (c callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	c.s.streams.closed(c.s.opts.Identities, streamKey{true, id})
	c.tracker.OnDeltaStreamClosed(id, node)
}

// OnStreamRequest implements serverv3.Callbacks.
func (c callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	k := streamKey{false, id}
	if err := c.firstRequest(k, req.GetNode()); err != nil {
		return err
	}
	rejected := c.ackOrNack(k, req.GetTypeUrl(), req.GetResponseNonce(), req.GetVersionInfo(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	if rejected != "" {
		// A NACK names the version the node kept; the cache would answer
		// it at once with the version just rejected, and a node that
		// rejects it again would loop. Present the rejected version as
		// the one the node has: the cache then waits for a different
		// snapshot, which it sends as usual. (Delta streams track what
		// was sent per resource and do not loop.)
		req.VersionInfo = rejected
	}
	return nil
}

// OnStreamDeltaRequest implements serverv3.Callbacks.
func (c callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	k := streamKey{true, id}
	if err := c.firstRequest(k, req.GetNode()); err != nil {
		return err
	}
	c.ackOrNack(k, req.GetTypeUrl(), req.GetResponseNonce(), "", req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	return nil
}

// firstRequest binds a stream to its node on the stream's first request
// and applies the node's metadata then.
func (c callbacks) firstRequest(k streamKey, node *corev3.Node) error {
	first, err := c.request(k, node)
	if first {
		c.s.nodeSeen(node)
		c.s.streams.identified(c.s.opts.Identities, k, node)
	}
	return err
}

// cacheLogger adapts slog to go-control-plane's logger. Its warnings are
// routine (an ADS request naming a subset of resources while Envoy
// catches up) and go to debug with the rest; errors stay errors.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }
