package translate

import (
	"net"
	"strconv"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshop/meshop/controlplane/model"
)

// The proxyless flavour: what gRPC's own xDS client (grpc-go's
// xds:///<service> resolver) fetches for a node whose metadata says
// mesh_flavor=proxyless. It differs from Envoy's where gRPC differs:
//   - the client asks for a listener named after the target, an API
//     listener whose connection manager names a route configuration;
//   - the route bounds a call with max_stream_duration (gRPC ignores
//     RouteAction.timeout) and retries on gRPC status names;
//   - every locality of a load assignment needs a locality and a weight
//     above zero (otherwise gRPC NACKs it, or silently drops it);
//   - endpoints are the apps' gRPC ports (mesh_grpc_port), not a sidecar.

// FlavorProxyless is the node metadata value (key MetaFlavor) of a
// proxyless gRPC node. ServerListenerTemplate is the
// server_listener_resource_name_template of a proxyless app's bootstrap:
// its gRPC server asks for the listener of that name, %s replaced by the
// address it listens on (ip:port).
const (
	MetaFlavor             = "mesh_flavor"
	FlavorProxyless        = "proxyless"
	ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"
)

// Flavors are the flavours of node: "" for an Envoy, FlavorProxyless for
// a gRPC client.
var Flavors = []string{"", FlavorProxyless}

// ServerListenerName is the name of the inbound listener of a proxyless
// app's gRPC server listening on addr (ip:port).
func ServerListenerName(addr string) string {
	return strings.Replace(ServerListenerTemplate, "%s", addr, 1)
}

// GRPCConfig is the proxyless flavour of a service's shared configuration:
// the API listener a gRPC client dialling xds:///<service> asks for, its
// route configuration, and the clusters it routes to.
type GRPCConfig struct {
	Listener *listenerv3.Listener
	Route    *routev3.RouteConfiguration
	Clusters []*clusterv3.Cluster
}

// ProxylessInputs is what a proxyless node's configuration is built from.
type ProxylessInputs struct {
	// Own is the node's own service.
	Own UpstreamRef
	// Listen is where the app's gRPC server listens (ip:port), "" when
	// its instance has no gRPC port.
	Listen string
	// Upstreams are the declared upstreams, sorted by name.
	Upstreams []UpstreamRef
	// Authz is who may call the app's gRPC server; nil: plaintext.
	Authz *InboundAuthz
}

// Key implements Inputs.
func (in *ProxylessInputs) Key() string { return key(in) }

// SharedNames implements Inputs.
func (in *ProxylessInputs) SharedNames() []string { return names(in.Upstreams) }

// Build implements Inputs.
func (in *ProxylessInputs) Build() *NodeConfig { return proxyless(in) }

// proxylessInputsOf gathers the inputs of the proxyless node of instance
// n.ID.
func proxylessInputsOf(m *model.Mesh, n Node, cfg Config, shared map[string]*Shared) (*ProxylessInputs, Reads, error) {
	r := &reader{m: m}
	in := r.instance(n.ID)
	if in == nil {
		return nil, r.done(), errUnknownNode(n.ID)
	}
	out := &ProxylessInputs{Own: r.upstream(in.Service, shared)}
	if in.GRPCPort != 0 {
		out.Listen = net.JoinHostPort(in.Address, strconv.Itoa(in.GRPCPort))
	}
	for _, name := range in.Upstreams {
		out.Upstreams = append(out.Upstreams, r.upstream(name, shared))
	}
	if out.Listen != "" {
		out.Authz = r.authz(cfg, in.Service)
	}
	return out, r.done(), nil
}

// proxyless is the configuration of a proxyless node: the inbound
// listener of its gRPC server, the shared gRPC configuration of each
// upstream it declared, and nothing else.
func proxyless(in *ProxylessInputs) *NodeConfig {
	c := &NodeConfig{Flavor: FlavorProxyless}
	if in.Listen != "" {
		c.Listeners = append(c.Listeners, grpcServerListener(in.Listen, in.Own.Name, in.Authz))
	}
	for _, u := range in.Upstreams {
		c.Upstreams = append(c.Upstreams, u.Name)
	}
	c.sort()
	return c
}

// grpcConfig is the gRPC flavour of a service's shared configuration.
// It has exactly the clusters its route uses (a split's version clusters,
// or svc_<name>): a gRPC client asks for those and no others.
func grpcConfig(in *upstreamConfigInputs) *GRPCConfig {
	c := &GRPCConfig{Listener: grpcAPIListener(in.Service), Route: grpcRoute(in)}
	for _, name := range grpcClusterNames(in.Service, in.policy()) {
		c.Clusters = append(c.Clusters, grpcCluster(name, in))
	}
	return c
}

// grpcClusterNames are the clusters a service's gRPC route uses.
func grpcClusterNames(service string, p model.Policy) []string {
	if len(p.Split) == 0 {
		return []string{UpstreamCluster(service)}
	}
	out := make([]string, len(p.Split))
	for i, s := range p.Split {
		out[i] = VersionCluster(service, s.Version)
	}
	return out
}

// grpcServerListener is what an xDS gRPC server listening on addr asks
// for: a listener on that address whose one filter chain hands every call
// to the server's own handlers (a non-forwarding route).
func grpcServerListener(addr, service string, authz *InboundAuthz) *listenerv3.Listener {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: "inbound",
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: RouteInbound,
			VirtualHosts: []*routev3.VirtualHost{{
				Name:    service,
				Domains: []string{"*"},
				Routes: []*routev3.Route{{
					Name:   "local_app",
					Match:  prefixMatch("/"),
					Action: &routev3.Route_NonForwardingAction{NonForwardingAction: &routev3.NonForwardingAction{}},
				}},
			}},
		}},
		HttpFilters: append(authz.filters(), routerFilter()),
	}
	l := listener(ServerListenerName(addr), host, uint32(p), inboundDirection, m)
	l.FilterChains[0].Name = "inbound"
	if authz != nil {
		l.FilterChains[0].TransportSocket = grpcDownstreamTLS()
	}
	return l
}

// grpcAPIListener is the listener a client dialling xds:///<service> asks
// for: an API listener whose connection manager takes its routes from RDS.
func grpcAPIListener(service string) *listenerv3.Listener {
	m := &hcmv3.HttpConnectionManager{
		StatPrefix: service,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: service,
		}},
		HttpFilters: []*hcmv3.HttpFilter{routerFilter()},
	}
	return &listenerv3.Listener{
		Name:        service,
		ApiListener: &listenerv3.ApiListener{ApiListener: mustAny(m)},
	}
}

// grpcRoute routes every call of the target to the service with its
// policy: the timeout as max_stream_duration, retries on the policy's gRPC codes, and
// the split by version as weighted clusters.
func grpcRoute(in *upstreamConfigInputs) *routev3.RouteConfiguration {
	p := in.Policy
	a := &routev3.RouteAction{
		MaxStreamDuration: &routev3.RouteAction_MaxStreamDuration{MaxStreamDuration: durationpb.New(p.Timeout)},
	}
	if len(p.Split) == 0 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: UpstreamCluster(in.Service)}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, s := range p.Split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   VersionCluster(in.Service, s.Version),
				Weight: wrapperspb.UInt32(s.Weight),
			})
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if p.Retries.Attempts > 0 && len(p.Retries.GRPCOn) > 0 {
		a.RetryPolicy = &routev3.RetryPolicy{
			RetryOn:    strings.Join(p.Retries.GRPCOn, ","),
			NumRetries: wrapperspb.UInt32(uint32(p.Retries.Attempts)),
			RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: durationpb.New(p.Retries.BackoffBase),
				MaxInterval:  durationpb.New(p.Retries.BackoffMax),
			},
		}
	}
	return &routev3.RouteConfiguration{
		Name: in.Service,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    in.Service,
			Domains: []string{in.Service},
			Routes: []*routev3.Route{{
				Name:   in.Service,
				Match:  prefixMatch("/"),
				Action: &routev3.Route_Route{Route: a},
			}},
		}},
	}
}

// grpcCluster is an EDS cluster as gRPC reads it: round robin, the
// policy's request limit, and its failure-percentage ejection (gRPC
// honours no consecutive-failure rule).
func grpcCluster(name string, in *upstreamConfigInputs) *clusterv3.Cluster {
	p := in.policy()
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		LbPolicy:             clusterv3.Cluster_ROUND_ROBIN,
		CircuitBreakers: &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			Priority:    corev3.RoutingPriority_DEFAULT,
			MaxRequests: wrapperspb.UInt32(p.CircuitBreaker.MaxRequests),
		}}},
	}
	if p.Outlier.FailurePercentageThreshold > 0 {
		c.OutlierDetection = &clusterv3.OutlierDetection{
			Interval:             durationpb.New(p.Outlier.Interval),
			BaseEjectionTime:     durationpb.New(p.Outlier.BaseEjectionTime),
			MaxEjectionPercent:   wrapperspb.UInt32(p.Outlier.MaxEjectionPercent),
			EnforcingSuccessRate: wrapperspb.UInt32(0),
		}
		setFailurePercentage(c.OutlierDetection, p.Outlier)
	}
	if in.TrustDomain != "" {
		c.TransportSocket = grpcUpstreamTLS(in.TrustDomain, in.Service)
	}
	return c
}

// grpcEndpoints are the load assignments of a service's gRPC clusters:
// the gRPC port of every endpoint that has one, or per split version
// those of that version.
func grpcEndpoints(svc *model.Service) []*endpointv3.ClusterLoadAssignment {
	var eps []*model.Instance
	for _, in := range svc.Endpoints() {
		if in.GRPCPort != 0 {
			eps = append(eps, in)
		}
	}
	if len(svc.Policy.Split) == 0 {
		return []*endpointv3.ClusterLoadAssignment{grpcLoadAssignment(UpstreamCluster(svc.Name), eps)}
	}
	var out []*endpointv3.ClusterLoadAssignment
	for _, s := range svc.Policy.Split {
		out = append(out, grpcLoadAssignment(VersionCluster(svc.Name, s.Version), ofVersion(eps, s.Version)))
	}
	return out
}

// grpcLoadAssignment puts the endpoints in one locality with a weight:
// gRPC refuses a locality without one, and drops one of weight zero. An
// address registered twice is listed once (gRPC refuses duplicates).
func grpcLoadAssignment(cluster string, insts []*model.Instance) *endpointv3.ClusterLoadAssignment {
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(insts) == 0 {
		return cla
	}
	lbs := make([]*endpointv3.LbEndpoint, 0, len(insts))
	seen := make(map[string]bool, len(insts))
	for _, in := range insts {
		addr := net.JoinHostPort(in.Address, strconv.Itoa(in.GRPCPort))
		if seen[addr] {
			continue
		}
		seen[addr] = true
		lbs = append(lbs, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address:  socketAddress(in.Address, uint32(in.GRPCPort)),
				Hostname: in.ID,
			}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
		})
	}
	cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{
		Locality:            &corev3.Locality{Zone: "mesh"},
		LoadBalancingWeight: wrapperspb.UInt32(1),
		LbEndpoints:         lbs,
	}}
	return cla
}
