package serve

import (
	"context"
	"log/slog"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/meshop/meshop/controlplane/translate"
)

// caches serves Envoys and proxyless gRPC clients from two snapshot
// caches. go-control-plane's ADS mode, which orders responses by type as
// Envoy needs, answers a request only when it names every resource of
// its type in the snapshot; a gRPC client names only the targets it
// dials (and the clusters their routes use), so its cache runs without
// ADS mode. A node's requests go to the cache of the flavour its node
// metadata announces (the ADS server puts the stream's node in every
// request).
type caches struct {
	envoy, grpc cachev3.SnapshotCache
}

var _ cachev3.Cache = caches{}

func newCaches(log *slog.Logger) caches {
	return caches{
		envoy: cachev3.NewSnapshotCache(true, nodeHash{}, cacheLogger{log}),
		grpc:  cachev3.NewSnapshotCache(false, nodeHash{}, cacheLogger{log}),
	}
}

// of is the cache of a flavour.
func (c caches) of(flavor string) cachev3.SnapshotCache {
	if flavor == translate.FlavorProxyless {
		return c.grpc
	}
	return c.envoy
}

func (c caches) forNode(n *corev3.Node) cachev3.SnapshotCache {
	return c.of(n.GetMetadata().GetFields()[translate.MetaFlavor].GetStringValue())
}

// set puts a node's snapshot in its flavour's cache and takes any
// snapshot of another flavour out of the other.
func (c caches) set(key, flavor string, snap *cachev3.Snapshot) error {
	if err := c.of(flavor).SetSnapshot(context.Background(), key, snap); err != nil {
		return err
	}
	other := c.grpc
	if flavor == translate.FlavorProxyless {
		other = c.envoy
	}
	other.ClearSnapshot(key)
	return nil
}

// clear takes a node's snapshot out of both caches.
func (c caches) clear(key string) {
	c.envoy.ClearSnapshot(key)
	c.grpc.ClearSnapshot(key)
}

// CreateWatch implements cachev3.ConfigWatcher.
func (c caches) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	return c.forNode(req.GetNode()).CreateWatch(req, sub, out)
}

// CreateDeltaWatch implements cachev3.ConfigWatcher.
func (c caches) CreateDeltaWatch(req *cachev3.DeltaRequest, sub cachev3.Subscription, out chan cachev3.DeltaResponse) (func(), error) {
	return c.forNode(req.GetNode()).CreateDeltaWatch(req, sub, out)
}

// Fetch implements cachev3.ConfigFetcher (REST is not served).
func (c caches) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	return c.forNode(req.GetNode()).Fetch(ctx, req)
}

// get returns the snapshot a node of that flavour is served.
func (c caches) get(key, flavor string) (cachev3.ResourceSnapshot, error) {
	return c.of(flavor).GetSnapshot(key)
}
