package translate

import (
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
)

// References are the names of the resources r needs in the same
// snapshot: what go-control-plane's Snapshot.Consistent finds (a
// cluster's load assignment, a listener's route configurations), and the
// route configuration of an API listener, which Consistent does not
// follow (a proxyless gRPC client's listener is one).
func References(r cachetypes.Resource) []string {
	var out []string
	for _, names := range cachev3.GetResourceReferences(map[string]cachetypes.ResourceWithTTL{"": {Resource: r}}) {
		for n := range names {
			out = append(out, n)
		}
	}
	if l, ok := r.(*listenerv3.Listener); ok && l.GetApiListener() != nil {
		m := &hcmv3.HttpConnectionManager{}
		if err := l.GetApiListener().GetApiListener().UnmarshalTo(m); err == nil && m.GetRds() != nil {
			out = append(out, m.GetRds().GetRouteConfigName())
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
