package translate

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/model"
)

// Names of resources, stable and greppable (DESIGN §6).
const (
	ListenerInbound  = "inbound"
	ListenerOutbound = "outbound"
	ListenerEdge     = "edge"
	RouteInbound     = "inbound"
	RouteOutbound    = "outbound"
	RouteEdge        = "edge"
	ClusterLocalApp  = "local_app"
	ClusterCollector = "otel_collector"
	// EdgeCluster is the Envoy node cluster of every edge gateway.
	EdgeCluster = "edge"
)

// UpstreamCluster is the EDS cluster of a service: svc_<service>.
func UpstreamCluster(service string) string { return "svc_" + service }

// VersionCluster is the EDS cluster of one version of a service, used when
// its policy splits traffic by version: svc_<service>_<version>. Service
// names have no '_', so the name is unambiguous.
func VersionCluster(service, version string) string {
	return "svc_" + service + "_" + version
}

// Config is what the control plane's operator chooses; it is the same for
// every node.
type Config struct {
	// CollectorAddress is the OTLP gRPC endpoint (host:port) Envoys send
	// spans to, as cluster otel_collector.
	CollectorAddress string
	// Default listener ports; node metadata may override the sidecar ones.
	InboundPort  uint32
	OutboundPort uint32
	EdgePort     uint32
	// RateLimit is the edge's local (per Envoy) token bucket.
	RateLimit RateLimit
	// CORSOrigins are the browser origins allowed to call the edge; "*"
	// allows any.
	CORSOrigins []string
}

// RateLimit is a token bucket: up to Burst requests at once, refilled with
// PerFill tokens every Interval.
type RateLimit struct {
	Burst    uint32
	PerFill  uint32
	Interval time.Duration
}

// DefaultConfig is the configuration of DESIGN §7.
func DefaultConfig() Config {
	return Config{
		CollectorAddress: "127.0.0.1:4317",
		InboundPort:      15006,
		OutboundPort:     15001,
		EdgePort:         8080,
		RateLimit:        RateLimit{Burst: 200, PerFill: 100, Interval: time.Second},
		CORSOrigins:      []string{"*"},
	}
}

// Node is what the translator needs to know about one sidecar Envoy.
type Node struct {
	// ID is the Consul instance ID (the Envoy node id).
	ID string
	// InboundPort and OutboundPort override Config's defaults when not 0
	// (Envoy node metadata inbound_port / outbound_port).
	InboundPort  uint32
	OutboundPort uint32
}

// Resources is one node's configuration, each list sorted by name.
type Resources struct {
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
}

// ByType returns the resources keyed by xDS type URL, the shape the
// snapshot cache takes.
func (r *Resources) ByType() map[resource.Type][]types.Resource {
	out := map[resource.Type][]types.Resource{
		resource.ClusterType:  make([]types.Resource, 0, len(r.Clusters)),
		resource.EndpointType: make([]types.Resource, 0, len(r.Endpoints)),
		resource.ListenerType: make([]types.Resource, 0, len(r.Listeners)),
		resource.RouteType:    make([]types.Resource, 0, len(r.Routes)),
	}
	for _, c := range r.Clusters {
		out[resource.ClusterType] = append(out[resource.ClusterType], c)
	}
	for _, e := range r.Endpoints {
		out[resource.EndpointType] = append(out[resource.EndpointType], e)
	}
	for _, l := range r.Listeners {
		out[resource.ListenerType] = append(out[resource.ListenerType], l)
	}
	for _, rc := range r.Routes {
		out[resource.RouteType] = append(out[resource.RouteType], rc)
	}
	return out
}

func (r *Resources) sort() {
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
}

// Upstreams supplies the resources of a service that every node calling it
// shares. Direct builds them on each call; the serve stage passes a
// memoizing implementation so that a thousand sidecars calling user share
// one svc_user cluster and one load assignment. Both must return what
// UpstreamClusters and UpstreamEndpoints return.
type Upstreams interface {
	Clusters(svc *model.Service) []*clusterv3.Cluster
	Endpoints(svc *model.Service) []*endpointv3.ClusterLoadAssignment
	// VirtualHost is the outbound virtual host of svc (what
	// UpstreamVirtualHost returns); callers' route configurations may
	// share it, as nothing modifies a built resource.
	VirtualHost(svc *model.Service) *routev3.VirtualHost
}

// Direct is the Upstreams that builds everything afresh.
type Direct struct{ Config Config }

// Clusters implements Upstreams.
func (d Direct) Clusters(svc *model.Service) []*clusterv3.Cluster {
	return UpstreamClusters(svc)
}

// Endpoints implements Upstreams.
func (d Direct) Endpoints(svc *model.Service) []*endpointv3.ClusterLoadAssignment {
	return UpstreamEndpoints(svc)
}

// VirtualHost implements Upstreams.
func (d Direct) VirtualHost(svc *model.Service) *routev3.VirtualHost {
	return UpstreamVirtualHost(svc)
}

// Errors a node's translation can fail with.
var (
	ErrUnknownNode = errors.New("node id is not an instance of a meshed service in the catalog")
	ErrNoAppPort   = errors.New("instance has no valid mesh_app_port")
)

// Sidecar is the configuration of the sidecar of instance n.ID: inbound
// to its app, outbound to each upstream it declared, and nothing else.
// It is a pure function of its arguments.
func Sidecar(m *model.Mesh, n Node, cfg Config, up Upstreams) (*Resources, error) {
	r, err := SidecarConfig(m, n, cfg, up)
	if err != nil {
		return nil, err
	}
	r.Endpoints = SidecarEndpoints(m, n, up)
	r.sort()
	return r, nil
}

// SidecarConfig is Sidecar without the load assignments: the part that
// changes only when a policy, a protocol or the upstream list changes.
func SidecarConfig(m *model.Mesh, n Node, cfg Config, up Upstreams) (*Resources, error) {
	if up == nil {
		up = Direct{cfg}
	}
	in := m.Instance(n.ID)
	if in == nil {
		return nil, fmt.Errorf("%w: %q", ErrUnknownNode, n.ID)
	}
	if in.AppPort == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoAppPort, n.ID)
	}
	svc := m.Service(in.Service)
	inbound := cmp.Or(n.InboundPort, cfg.InboundPort)
	outbound := cmp.Or(n.OutboundPort, cfg.OutboundPort)
	if inbound == outbound {
		return nil, fmt.Errorf("inbound and outbound listeners would share port %d", inbound)
	}
	tracer := in.Service + "-sidecar"

	r := &Resources{}
	r.Clusters = append(r.Clusters, localAppCluster(svc, in.AppPort), collectorCluster(cfg.CollectorAddress))
	r.Listeners = append(r.Listeners,
		listener(ListenerInbound, "0.0.0.0", inbound, inboundDirection,
			hcm(ListenerInbound, RouteInbound, tracer, nil)),
		listener(ListenerOutbound, "127.0.0.1", outbound, outboundDirection,
			hcm(ListenerOutbound, RouteOutbound, tracer, nil)),
	)
	r.Routes = append(r.Routes, inboundRoute(svc))

	vhosts := make([]*routev3.VirtualHost, 0, len(in.Upstreams)+1)
	for _, name := range in.Upstreams {
		u := m.Service(name)
		r.Clusters = append(r.Clusters, up.Clusters(u)...)
		vhosts = append(vhosts, up.VirtualHost(u))
	}
	vhosts = append(vhosts, undeclaredVirtualHost(in.Service))
	r.Routes = append(r.Routes, &routev3.RouteConfiguration{
		Name:             RouteOutbound,
		VirtualHosts:     vhosts,
		ValidateClusters: wrapBool(false),
	})
	r.sort()
	return r, nil
}

// SidecarEndpoints is the load assignments of Sidecar: one per EDS cluster
// of each declared upstream.
func SidecarEndpoints(m *model.Mesh, n Node, up Upstreams) []*endpointv3.ClusterLoadAssignment {
	if up == nil {
		up = Direct{}
	}
	in := m.Instance(n.ID)
	if in == nil {
		return nil
	}
	var out []*endpointv3.ClusterLoadAssignment
	for _, name := range in.Upstreams {
		out = append(out, up.Endpoints(m.Service(name))...)
	}
	slices.SortFunc(out, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	return out
}

// Edge is the configuration every edge gateway shares: one listener, one
// route table with /api/<prefix> for each public route, and the clusters
// of the services that own them.
func Edge(m *model.Mesh, cfg Config, up Upstreams) (*Resources, error) {
	r, err := EdgeConfig(m, cfg, up)
	if err != nil {
		return nil, err
	}
	r.Endpoints = EdgeEndpoints(m, up)
	r.sort()
	return r, nil
}

// EdgeConfig is Edge without the load assignments.
func EdgeConfig(m *model.Mesh, cfg Config, up Upstreams) (*Resources, error) {
	if up == nil {
		up = Direct{cfg}
	}
	r := &Resources{}
	r.Clusters = append(r.Clusters, collectorCluster(cfg.CollectorAddress))
	for _, name := range m.PublicServices() {
		r.Clusters = append(r.Clusters, up.Clusters(m.Service(name))...)
	}
	r.Listeners = append(r.Listeners, listener(ListenerEdge, "0.0.0.0", cfg.EdgePort, inboundDirection,
		hcm(ListenerEdge, RouteEdge, EdgeCluster, edgeFilters(cfg))))
	r.Routes = append(r.Routes, edgeRoute(m, cfg))
	r.sort()
	return r, nil
}

// EdgeEndpoints is the load assignments of Edge.
func EdgeEndpoints(m *model.Mesh, up Upstreams) []*endpointv3.ClusterLoadAssignment {
	if up == nil {
		up = Direct{}
	}
	var out []*endpointv3.ClusterLoadAssignment
	for _, name := range m.PublicServices() {
		out = append(out, up.Endpoints(m.Service(name))...)
	}
	slices.SortFunc(out, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	return out
}

// IsEdge reports whether an Envoy node cluster is the edge's.
func IsEdge(nodeCluster string) bool { return nodeCluster == EdgeCluster }
