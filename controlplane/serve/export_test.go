package serve

import cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"

// ServedForTest returns the resources the cache holds for a key, by type
// URL and name, in the compact form Envoy's responses are encoded from.
func (s *Server) ServedForTest(key string) (map[string]map[string]cachetypes.Resource, error) {
	snap, err := s.cache.get(key, "")
	if err != nil {
		return nil, err
	}
	out := map[string]map[string]cachetypes.Resource{}
	for _, typ := range snapshotTypes {
		out[typ] = snap.GetResources(typ)
	}
	return out, nil
}
