package rpc

import (
	"context"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/stats"
	"google.golang.org/grpc/status"
)

// meshDenials counts the calls the mesh refused before they reached the
// service: in proxyless mode gRPC's RBAC (Consul's intentions, sent by
// the control plane) answers PermissionDenied without running the
// server's interceptors. A call the service itself refuses with
// PermissionDenied is not one of them: it went through reached.
type meshDenials struct {
	denied *prometheus.CounterVec
}

func newMeshDenials(reg prometheus.Registerer) (*meshDenials, error) {
	d := &meshDenials{denied: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meshop_grpc_server_mesh_denied_total",
		Help: "gRPC calls refused by the mesh's authorization (RBAC from Consul intentions) before they reached the service, by method.",
	}, []string{"grpc_method"})}
	return d, reg.Register(d.denied)
}

type reachedKey struct{}

// reached marks a call that got to the server's interceptors.
func (d *meshDenials) reached(ctx context.Context, req any, _ *grpc.UnaryServerInfo, next grpc.UnaryHandler) (any, error) {
	if r, ok := ctx.Value(reachedKey{}).(*atomic.Bool); ok {
		r.Store(true)
	}
	return next(ctx, req)
}

// TagRPC implements stats.Handler.
func (d *meshDenials) TagRPC(ctx context.Context, _ *stats.RPCTagInfo) context.Context {
	return context.WithValue(ctx, reachedKey{}, new(atomic.Bool))
}

// HandleRPC implements stats.Handler: a call that ends PermissionDenied
// without having reached the interceptors was denied by the mesh.
func (d *meshDenials) HandleRPC(ctx context.Context, s stats.RPCStats) {
	end, ok := s.(*stats.End)
	if !ok || status.Code(end.Error) != codes.PermissionDenied {
		return
	}
	if r, ok := ctx.Value(reachedKey{}).(*atomic.Bool); ok && !r.Load() {
		method, _ := grpc.Method(ctx)
		d.denied.WithLabelValues(method).Inc()
	}
}

// TagConn implements stats.Handler.
func (d *meshDenials) TagConn(ctx context.Context, _ *stats.ConnTagInfo) context.Context { return ctx }

// HandleConn implements stats.Handler.
func (d *meshDenials) HandleConn(context.Context, stats.ConnStats) {}
