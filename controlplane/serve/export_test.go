package serve

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
)

// SeenForTest is what a node's first request does: its metadata is
// applied and its snapshot built in its flavour.
func (s *Server) SeenForTest(n *corev3.Node) { s.nodeSeen(n) }

// ServedForTest returns the resources the cache of a flavour holds for a
// key, by type URL and name, in the compact form responses are encoded
// from.
func (s *Server) ServedForTest(key, flavor string) (map[string]map[string]cachetypes.Resource, error) {
	snap, err := s.cache.get(key, flavor)
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]cachetypes.Resource{}
	for _, typ := range snapshotTypes {
		out[typ] = snap.GetResources(typ)
	}
	return out, nil
}

// KeepsProxylessForTest reports whether the services' proxyless
// resources are kept (a gRPC client has asked).
func (s *Server) KeepsProxylessForTest() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.shared.proxyless
}
