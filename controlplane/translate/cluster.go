package translate

import (
	"net"
	"net/netip"
	"strconv"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshop/meshop/controlplane/model"
)

const httpProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// upstreamClusters are the EDS clusters callers of a service use:
// svc_<name>, plus svc_<name>_<version> for each version its policy splits
// traffic to.
func upstreamClusters(in *upstreamConfigInputs) []*clusterv3.Cluster {
	out := []*clusterv3.Cluster{edsCluster(UpstreamCluster(in.Service), in)}
	for _, s := range in.Policy.Split {
		out = append(out, edsCluster(VersionCluster(in.Service, s.Version), in))
	}
	return out
}

// upstreamEndpoints are the load assignments of upstreamClusters: every
// endpoint of svc (passing checks only), and per split version those of
// that version.
func upstreamEndpoints(svc *model.Service) []*endpointv3.ClusterLoadAssignment {
	eps := svc.Endpoints()
	out := []*endpointv3.ClusterLoadAssignment{loadAssignment(UpstreamCluster(svc.Name), eps)}
	for _, s := range svc.Policy.Split {
		out = append(out, loadAssignment(VersionCluster(svc.Name, s.Version), ofVersion(eps, s.Version)))
	}
	return out
}

// ofVersion returns the instances of a version.
func ofVersion(insts []*model.Instance, version string) []*model.Instance {
	var out []*model.Instance
	for _, in := range insts {
		if in.Version == version {
			out = append(out, in)
		}
	}
	return out
}

func edsCluster(name string, in *upstreamConfigInputs) *clusterv3.Cluster {
	p := in.Policy
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
		ConnectTimeout:       durationpb.New(p.ConnectTimeout),
		// Least request copes with instances of uneven speed better than
		// round robin and is as cheap with few hosts.
		LbPolicy:                      clusterv3.Cluster_LEAST_REQUEST,
		CircuitBreakers:               circuitBreakers(p.CircuitBreaker),
		OutlierDetection:              outlierDetection(p.Outlier),
		TypedExtensionProtocolOptions: upstreamProtocolOptions(in.Protocol),
	}
	if in.TrustDomain != "" {
		c.TransportSocket = envoyUpstreamTLS(in.TrustDomain, in.Service)
	}
	return c
}

func circuitBreakers(cb model.CircuitBreaker) *clusterv3.CircuitBreakers {
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		Priority:           corev3.RoutingPriority_DEFAULT,
		MaxConnections:     wrapperspb.UInt32(cb.MaxConnections),
		MaxPendingRequests: wrapperspb.UInt32(cb.MaxPendingRequests),
		MaxRequests:        wrapperspb.UInt32(cb.MaxRequests),
		MaxRetries:         wrapperspb.UInt32(cb.MaxRetries),
	}}}
}

// outlierDetection enforces exactly what the policy says: consecutive 5xx
// and gateway failures; success-rate ejection (on by default in Envoy) is
// switched off so behaviour does not change with traffic volume.
func outlierDetection(o model.OutlierDetection) *clusterv3.OutlierDetection {
	od := &clusterv3.OutlierDetection{
		Interval:                           durationpb.New(o.Interval),
		BaseEjectionTime:                   durationpb.New(o.BaseEjectionTime),
		MaxEjectionPercent:                 wrapperspb.UInt32(o.MaxEjectionPercent),
		EnforcingConsecutive_5Xx:           wrapperspb.UInt32(0),
		EnforcingConsecutiveGatewayFailure: wrapperspb.UInt32(0),
		EnforcingSuccessRate:               wrapperspb.UInt32(0),
	}
	if o.Consecutive5xx > 0 {
		od.Consecutive_5Xx = wrapperspb.UInt32(o.Consecutive5xx)
		od.EnforcingConsecutive_5Xx = wrapperspb.UInt32(100)
	}
	if o.ConsecutiveGatewayFailure > 0 {
		od.ConsecutiveGatewayFailure = wrapperspb.UInt32(o.ConsecutiveGatewayFailure)
		od.EnforcingConsecutiveGatewayFailure = wrapperspb.UInt32(100)
	}
	setFailurePercentage(od, o)
	return od
}

// setFailurePercentage adds the policy's failure-percentage ejection, the
// rule Envoy and gRPC clients both honour.
func setFailurePercentage(od *clusterv3.OutlierDetection, o model.OutlierDetection) {
	if o.FailurePercentageThreshold == 0 {
		return
	}
	od.FailurePercentageThreshold = wrapperspb.UInt32(o.FailurePercentageThreshold)
	od.EnforcingFailurePercentage = wrapperspb.UInt32(100)
	od.FailurePercentageMinimumHosts = wrapperspb.UInt32(o.FailurePercentageMinimumHosts)
	od.FailurePercentageRequestVolume = wrapperspb.UInt32(o.FailurePercentageRequestVolume)
}

// protocolOptions pins the upstream HTTP version: explicit HTTP/2 (prior
// knowledge, as gRPC and h2c servers expect) or HTTP/1.1.
func protocolOptions(p model.Protocol) map[string]*anyMsg {
	opts := &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)},
	}
	if p == model.HTTP2 {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
		}}
	} else {
		opts.UpstreamProtocolOptions = &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
			ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions{HttpProtocolOptions: &corev3.Http1ProtocolOptions{}},
		}}
	}
	return map[string]*anyMsg{httpProtocolOptionsKey: mustAny(opts)}
}

// upstreamProtocolOptions is how a caller's sidecar speaks to an
// instance's sidecar: HTTP/2 to a service that speaks only HTTP/2, and
// otherwise the protocol the call came in with, so that gRPC calls (HTTP/2)
// and HTTP/1.1 requests both reach the inbound listener (codec AUTO) as
// they were made.
func upstreamProtocolOptions(p model.Protocol) map[string]*anyMsg {
	if p == model.HTTP2 {
		return protocolOptions(p)
	}
	opts := &httpv3.HttpProtocolOptions{
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)},
		UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_UseDownstreamProtocolConfig{UseDownstreamProtocolConfig: &httpv3.HttpProtocolOptions_UseDownstreamHttpConfig{
			HttpProtocolOptions:  &corev3.Http1ProtocolOptions{},
			Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
		}},
	}
	return map[string]*anyMsg{httpProtocolOptionsKey: mustAny(opts)}
}

func loadAssignment(cluster string, insts []*model.Instance) *endpointv3.ClusterLoadAssignment {
	lbs := make([]*endpointv3.LbEndpoint, 0, len(insts))
	for _, in := range insts {
		ep := &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
				Address:  socketAddress(in.Address, uint32(in.Port)),
				Hostname: in.ID,
			}},
			HealthStatus: corev3.HealthStatus_HEALTHY,
		}
		if in.Version != "" {
			ep.Metadata = &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{
				"envoy.lb": {Fields: map[string]*structpb.Value{"version": structpb.NewStringValue(in.Version)}},
			}}
		}
		lbs = append(lbs, ep)
	}
	cla := &endpointv3.ClusterLoadAssignment{ClusterName: cluster}
	if len(lbs) > 0 {
		cla.Endpoints = []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}
	}
	return cla
}

// localAppCluster forwards inbound traffic to a port of the app on
// loopback: its HTTP port (local_app, in the service's protocol) or its
// gRPC port (local_app_grpc, HTTP/2). The service's own policy bounds it:
// its circuit breaker protects the app from more concurrency than it was
// sized for.
func localAppCluster(in *SidecarInputs, name string, port int) *clusterv3.Cluster {
	own := in.Own.config
	protocol := own.Protocol
	if name == ClusterLocalAppGRPC {
		protocol = model.HTTP2
	}
	return &clusterv3.Cluster{
		Name:                          name,
		ClusterDiscoveryType:          &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:                durationpb.New(own.Policy.ConnectTimeout),
		LoadAssignment:                loadAssignmentTo(name, "127.0.0.1", uint32(port)),
		CircuitBreakers:               circuitBreakers(own.Policy.CircuitBreaker),
		TypedExtensionProtocolOptions: protocolOptions(protocol),
	}
}

// collectorCluster reaches the OTLP gRPC collector; a host name (compose:
// "jaeger") is resolved by Envoy's DNS, an IP is static.
func collectorCluster(addr string) *clusterv3.Cluster {
	host, portStr, err := net.SplitHostPort(addr)
	port, perr := strconv.ParseUint(portStr, 10, 16)
	if err != nil || perr != nil || host == "" {
		// Config validation rejects this before it gets here; keep the
		// function total anyway.
		host, port = "127.0.0.1", 4317
	}
	c := &clusterv3.Cluster{
		Name:                          ClusterCollector,
		ConnectTimeout:                durationpb.New(time.Second),
		LoadAssignment:                loadAssignmentTo(ClusterCollector, host, uint32(port)),
		TypedExtensionProtocolOptions: protocolOptions(model.HTTP2),
	}
	if _, err := netip.ParseAddr(host); err == nil {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	} else {
		c.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STRICT_DNS}
		c.DnsLookupFamily = clusterv3.Cluster_V4_PREFERRED
	}
	return c
}

func loadAssignmentTo(cluster, host string, port uint32) *endpointv3.ClusterLoadAssignment {
	return &endpointv3.ClusterLoadAssignment{
		ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: []*endpointv3.LbEndpoint{{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: socketAddress(host, port)}},
		}}}},
	}
}

func socketAddress(host string, port uint32) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Protocol:      corev3.SocketAddress_TCP,
		Address:       host,
		PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
	}}}
}

func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}
