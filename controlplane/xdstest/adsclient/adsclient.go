// Package adsclient is the client side of an ADS stream as Envoy speaks
// it, the core both simulated Envoys share (envoysim for tests, xdsload
// for the load tool): per resource type, the version last accepted, the
// nonce last received and the names explicitly subscribed; the requests
// that ACK, NACK and change a subscription; and the names a cluster or a
// listener makes Envoy ask for next.
//
//	CDS, LDS (wildcard) ──────────────────────────────▶ server
//	  ◀── clusters ── ACK; EDSName of each ── Resubscribe(EDS) ──▶ EDS request
//	  ◀── listeners ─ ACK; RouteNames of each ─ Resubscribe(RDS) ──▶ RDS request
//
// What a simulated Envoy keeps of the resources, how much of them it
// decodes and when it sends what, is its own.
package adsclient

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
)

// Subscription is one resource type on one ADS stream.
type Subscription struct {
	TypeURL string
	// Version is the version last accepted; Nonce the nonce of the last
	// response, accepted or not.
	Version, Nonce string
	// Names is the explicit subscription, sorted: the load assignments
	// (EDS) and route configurations (RDS) the clusters and listeners
	// name. Empty for the wildcard types (CDS, LDS).
	Names []string
}

// Request is the state-of-the-world request for s: the first one, the
// ACK of the last response (nack nil) or its NACK with nack's reason.
// Like Envoy, it carries the node on every request.
func (s *Subscription) Request(node *corev3.Node, nack *statuspb.Status) *discoveryv3.DiscoveryRequest {
	return &discoveryv3.DiscoveryRequest{Node: node, TypeUrl: s.TypeURL, VersionInfo: s.Version,
		ResponseNonce: s.Nonce, ResourceNames: slices.Clone(s.Names), ErrorDetail: nack}
}

// Resubscribe makes names (sorted and compacted in place) the explicit
// subscription and returns the change a delta stream announces;
// changed is false when the names are the ones already subscribed.
func (s *Subscription) Resubscribe(names []string) (c Change, changed bool) {
	slices.Sort(names)
	names = slices.Compact(names)
	if slices.Equal(s.Names, names) {
		return Change{}, false
	}
	c = Change{TypeURL: s.TypeURL, Subscribe: minus(names, s.Names), Unsubscribe: minus(s.Names, names)}
	s.Names = names
	return c, true
}

// Change is a change of an explicit subscription, which a delta stream
// sends after the ACK of the response that caused it.
type Change struct {
	TypeURL                string
	Subscribe, Unsubscribe []string
}

// Request is the delta request that announces c.
func (c Change) Request() *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{TypeUrl: c.TypeURL,
		ResourceNamesSubscribe: c.Subscribe, ResourceNamesUnsubscribe: c.Unsubscribe}
}

// DeltaReply is the delta request that ACKs resp (nack nil) or NACKs it
// with nack's reason.
func DeltaReply(resp *discoveryv3.DeltaDiscoveryResponse, nack *statuspb.Status) *discoveryv3.DeltaDiscoveryRequest {
	return &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resp.GetTypeUrl(), ResponseNonce: resp.GetNonce(), ErrorDetail: nack}
}

// EDSName returns the load assignment an EDS cluster asks for: its EDS
// service name, else its own name. It is "" for other cluster types.
func EDSName(c *clusterv3.Cluster) string {
	if c.GetType() != clusterv3.Cluster_EDS {
		return ""
	}
	if n := c.GetEdsClusterConfig().GetServiceName(); n != "" {
		return n
	}
	return c.GetName()
}

// RouteNames returns the route configurations l's HTTP connection
// managers load over RDS, in filter order.
func RouteNames(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if h := resource.GetHTTPConnectionManager(f); h.GetRds() != nil {
				out = append(out, h.GetRds().GetRouteConfigName())
			}
		}
	}
	return out
}

// minus returns the names in a that are not in b, in a's order.
func minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
