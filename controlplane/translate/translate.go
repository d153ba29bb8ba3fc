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
	// ListenerExpose and RouteExpose: the sidecar's plaintext listener for
	// Consul's checks and Prometheus (GET /health, /ready, /metrics only),
	// which cannot present mesh certificates (Consul's "expose paths",
	// Istio's 15021).
	ListenerExpose  = "expose"
	RouteExpose     = "expose"
	ListenerEdge    = "edge"
	RouteInbound    = "inbound"
	RouteOutbound   = "outbound"
	RouteEdge       = "edge"
	ClusterLocalApp = "local_app"
	// ClusterLocalAppGRPC is the app's gRPC port, where the inbound
	// listener sends calls with content-type application/grpc.
	ClusterLocalAppGRPC = "local_app_grpc"
	ClusterCollector    = "otel_collector"
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
	ExposePort   uint32
	EdgePort     uint32
	// RateLimit is the edge's local (per Envoy) token bucket.
	RateLimit RateLimit
	// CORSOrigins are the browser origins allowed to call the edge; "*"
	// allows any.
	CORSOrigins []string
	// EdgeTLS makes the edge listener HTTPS, with the certificate of the
	// secret SecretEdgeHTTPS, which the edge Envoy reads from EdgeTLSFile
	// (an SDS file in its own file system); off, it speaks plain HTTP.
	EdgeTLS     bool
	EdgeTLSFile string
	// MTLS turns on mutual TLS and the intentions' authorization between
	// the mesh's nodes (see mtls.go and rbac.go), once Consul's Connect CA
	// has a trust domain; until then, and with MTLS off, nodes speak
	// plaintext and authorize nothing.
	MTLS bool
}

// TrustDomain is the trust domain mutual TLS uses in m, or "" for
// plaintext (MTLS off, or no trust domain known yet).
func (c Config) TrustDomain(m *model.Mesh) string {
	if !c.MTLS {
		return ""
	}
	return m.TrustDomain
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
		ExposePort:       15021,
		EdgePort:         8080,
		RateLimit:        RateLimit{Burst: 200, PerFill: 100, Interval: time.Second},
		CORSOrigins:      []string{"*"},
		EdgeTLS:          true,
		EdgeTLSFile:      DefaultEdgeTLSFile,
	}
}

// Node is what the translator needs to know about one sidecar Envoy.
type Node struct {
	// ID is the Consul instance ID (the Envoy node id).
	ID string
	// InboundPort, OutboundPort and ExposePort override Config's defaults
	// when not 0 (Envoy node metadata inbound_port / outbound_port /
	// expose_port).
	InboundPort  uint32
	OutboundPort uint32
	ExposePort   uint32
	// Flavor is FlavorProxyless for a gRPC client (node metadata
	// mesh_flavor), "" for an Envoy.
	Flavor string
	// Edge is set for the edge gateways' node (ID and ports unused).
	Edge bool
}

// Resources is one node's whole configuration, each list sorted by name.
type Resources struct {
	Clusters  []*clusterv3.Cluster
	Endpoints []*endpointv3.ClusterLoadAssignment
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
}

// ByType returns the resources keyed by xDS type URL, the shape the
// snapshot cache takes.
func (r *Resources) ByType() map[resource.Type][]types.Resource {
	return map[resource.Type][]types.Resource{
		resource.ClusterType:  asResources(r.Clusters),
		resource.EndpointType: asResources(r.Endpoints),
		resource.ListenerType: asResources(r.Listeners),
		resource.RouteType:    asResources(r.Routes),
	}
}

func asResources[T types.Resource](rs []T) []types.Resource {
	out := make([]types.Resource, len(rs))
	for i, r := range rs {
		out[i] = r
	}
	return out
}

// NodeConfig is what Inputs.Build returns: a node's own
// resources, each list sorted by name, and the services whose shared
// resources (their Shared, in the node's flavour) complete its snapshot.
type NodeConfig struct {
	// Flavor is "" for an Envoy, FlavorProxyless for a gRPC client.
	Flavor    string
	Clusters  []*clusterv3.Cluster
	Listeners []*listenerv3.Listener
	Routes    []*routev3.RouteConfiguration
	// Upstreams are the names of the services whose Shared the node
	// references, sorted.
	Upstreams []string
}

// Resources joins the node's own resources with the shared ones of its
// upstreams: the configuration the node receives. shared must hold every
// name in c.Upstreams.
func (c *NodeConfig) Resources(shared map[string]*Shared) *Resources {
	r := &Resources{
		Clusters:  slices.Clone(c.Clusters),
		Listeners: slices.Clone(c.Listeners),
		Routes:    slices.Clone(c.Routes),
	}
	for _, name := range c.Upstreams {
		p := shared[name].Parts(c.Flavor)
		r.Listeners = append(r.Listeners, p.Listeners...)
		r.Routes = append(r.Routes, p.Routes...)
		r.Clusters = append(r.Clusters, p.Clusters...)
		r.Endpoints = append(r.Endpoints, p.Endpoints...)
	}
	slices.SortFunc(r.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(r.Endpoints, func(a, b *endpointv3.ClusterLoadAssignment) int { return cmp.Compare(a.ClusterName, b.ClusterName) })
	return r
}

// Shared is what every node calling a service shares, in both flavours:
// for Envoys its clusters and outbound virtual host (Config) and their
// load assignments (Endpoints); for proxyless gRPC clients its API
// listener, route and clusters (GRPC) and their load assignments
// (GRPCEndpoints). Upstream builds it from the service alone.
type Shared struct {
	Name   string
	Config *UpstreamConfig
	GRPC   *GRPCConfig
	// ConfigKey is the key of the inputs Config and GRPC were built from:
	// equal keys, equal configurations. It is part of every caller's
	// inputs.
	ConfigKey     string
	Endpoints     []*endpointv3.ClusterLoadAssignment
	GRPCEndpoints []*endpointv3.ClusterLoadAssignment
}

// Parts are the resources of s that a node of flavor takes into its
// snapshot.
func (s *Shared) Parts(flavor string) *Resources {
	if flavor == FlavorProxyless {
		return &Resources{
			Listeners: []*listenerv3.Listener{s.GRPC.Listener},
			Routes:    []*routev3.RouteConfiguration{s.GRPC.Route},
			Clusters:  s.GRPC.Clusters,
			Endpoints: s.GRPCEndpoints,
		}
	}
	return &Resources{Clusters: s.Config.Clusters, Endpoints: s.Endpoints}
}

// UpstreamConfig is the part of a service's shared configuration that its
// callers' own resources are built from.
type UpstreamConfig struct {
	// Protocol and Policy are the service's (the edge's routes to it
	// carry its timeouts, retries and split; its own sidecar follows
	// both).
	Protocol model.Protocol
	Policy   model.Policy
	Clusters []*clusterv3.Cluster
}

// Upstream translates svc into what its callers share; its clusters
// check that the callee is a leaf of svc in trustDomain (mutual TLS; ""
// for plaintext, see Config.TrustDomain). prev is the previous Shared of
// the same service, or nil: when the inputs of its Config did not change,
// that Config is returned again instead of a new equal one. Endpoints are
// built afresh: call Upstream only when Changes names svc.
func Upstream(svc *model.Service, trustDomain string, prev *Shared) *Shared {
	in := &upstreamConfigInputs{Service: svc.Name, Protocol: svc.Protocol, Policy: policyFields(svc.Policy), TrustDomain: trustDomain}
	s := &Shared{Name: svc.Name, ConfigKey: key(in), Endpoints: upstreamEndpoints(svc), GRPCEndpoints: grpcEndpoints(svc)}
	if prev != nil && prev.ConfigKey == s.ConfigKey {
		s.Config, s.GRPC = prev.Config, prev.GRPC
	} else {
		s.Config = &UpstreamConfig{Protocol: in.Protocol, Policy: in.policy(), Clusters: upstreamClusters(in)}
		s.GRPC = grpcConfig(in)
	}
	return s
}

// AllShared translates every service of m from nothing, by name: what
// serve keeps up to date one change at a time.
func AllShared(m *model.Mesh, cfg Config) map[string]*Shared {
	out := make(map[string]*Shared, m.Services.Len())
	for name, svc := range m.Services.All() {
		out[name] = Upstream(svc, cfg.TrustDomain(m), nil)
	}
	return out
}

// Errors a node's translation can fail with.
var (
	ErrUnknownNode = errors.New("node id is not an instance of a meshed service in the catalog")
	ErrNoAppPort   = errors.New("instance has no valid mesh_app_port")
	// ErrInboundPortMoved: a sidecar's node metadata names another inbound
	// port than the one its instance registered in Consul, where callers
	// send its traffic. Whoever can open a stream with a node id must not
	// move that node's inbound listener.
	ErrInboundPortMoved = errors.New("node metadata inbound_port is not the port the instance registered")
)

func errUnknownNode(id string) error { return fmt.Errorf("%w: %q", ErrUnknownNode, id) }

// sidecar is the configuration of a sidecar's own resources: inbound to
// its app, outbound to each upstream it declared (their virtual hosts),
// and nothing else.
func sidecar(in *SidecarInputs) *NodeConfig {
	tracer := in.Own.Name + "-sidecar"
	c := &NodeConfig{}
	c.Clusters = append(c.Clusters, localAppCluster(in, ClusterLocalApp, in.AppPort), collectorCluster(in.Collector))
	if in.GRPCPort != 0 {
		c.Clusters = append(c.Clusters, localAppCluster(in, ClusterLocalAppGRPC, in.GRPCPort))
	}
	inbound := listener(ListenerInbound, "0.0.0.0", in.InboundPort, inboundDirection,
		hcm(ListenerInbound, RouteInbound, tracer, in.Authz.filters()))
	inbound.FilterChains[0].TransportSocket = in.Authz.envoyTLS()
	c.Listeners = append(c.Listeners, inbound,
		listener(ListenerOutbound, "127.0.0.1", in.OutboundPort, outboundDirection,
			hcm(ListenerOutbound, RouteOutbound, tracer, nil)),
		listener(ListenerExpose, "0.0.0.0", in.ExposePort, inboundDirection,
			hcm(ListenerExpose, RouteExpose, tracer, nil)),
	)
	vhosts := make([]*routev3.VirtualHost, 0, len(in.Upstreams)+1)
	for _, u := range in.Upstreams {
		vhosts = append(vhosts, upstreamVirtualHost(u.Name, u.config.Policy))
		c.Upstreams = append(c.Upstreams, u.Name)
	}
	vhosts = append(vhosts, undeclaredVirtualHost(in.Own.Name))
	c.Routes = append(c.Routes, inboundRoute(in.Own.config.Policy, in.GRPCPort != 0), exposeRoute(), &routev3.RouteConfiguration{
		Name:             RouteOutbound,
		VirtualHosts:     vhosts,
		ValidateClusters: wrapBool(false),
	})
	c.sort()
	return c
}

// edge is the configuration every edge gateway shares: one listener
// (HTTPS, and checking tokens: edgeauth.go), one route table with
// /api/<prefix> for each public route, and (shared) the clusters of the
// services that own them and of auth, whose keys verify tokens.
func edge(in *EdgeInputs) *NodeConfig {
	c := &NodeConfig{}
	c.Clusters = append(c.Clusters, collectorCluster(in.Collector))
	for _, u := range in.Upstreams {
		c.Upstreams = append(c.Upstreams, u.Name)
	}
	m := hcm(ListenerEdge, RouteEdge, EdgeCluster, edgeFilters(in.RateLimit, in.CheckTokens))
	if in.CheckTokens {
		m.LocalReplyConfig.Mappers = append(tokenReplyMappers(), m.LocalReplyConfig.Mappers...)
	}
	l := listener(ListenerEdge, "0.0.0.0", in.Port, inboundDirection, m)
	if in.TLSFile != "" {
		l.FilterChains[0].TransportSocket = edgeHTTPS(in.TLSFile)
	}
	c.Listeners = append(c.Listeners, l)
	c.Routes = append(c.Routes, edgeRoute(in))
	c.sort()
	return c
}

func (c *NodeConfig) sort() {
	slices.SortFunc(c.Clusters, func(a, b *clusterv3.Cluster) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Listeners, func(a, b *listenerv3.Listener) int { return cmp.Compare(a.Name, b.Name) })
	slices.SortFunc(c.Routes, func(a, b *routev3.RouteConfiguration) int { return cmp.Compare(a.Name, b.Name) })
	slices.Sort(c.Upstreams)
}

// IsEdge reports whether an Envoy node cluster is the edge's.
func IsEdge(nodeCluster string) bool { return nodeCluster == EdgeCluster }
