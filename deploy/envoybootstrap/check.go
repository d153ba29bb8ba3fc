package envoybootstrap

import (
	"fmt"
	"maps"
	"net"
	"regexp"
	"slices"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
)

// MetricsPort is every Envoy's read-only metrics listener (Istio's
// number), which Prometheus scrapes instead of the admin API.
const MetricsPort = 15090

// ConnectCARoots is where Envoys find Consul's Connect CA roots, which
// they check the control plane's certificate with (compose's consul-init
// and the chart's init container put them there).
const ConnectCARoots = "/consul/ca/connect-ca.pem"

// ControlPlaneAddr is where every bootstrap finds the control plane: the
// compose service, and the chart's Service, named controlplane (DESIGN §7).
const ControlPlaneAddr = "controlplane:18000"

// Want is what one bootstrap must say.
type Want struct {
	APIType   corev3.ApiConfigSource_ApiType // DELTA_GRPC or GRPC
	AdminPort uint32                         // 15000 for sidecars, 9901 for the edge
	Sidecar   bool                           // a sidecar (listener ports in node metadata) or the edge
	Token     string                         // the Consul token the template was rendered with
}

// Check lists how b breaks Meshop's rules for a bootstrap (nil: none):
// node identity from the command line, only the control plane's cluster
// and the metrics listener static, ADS of the wanted flavour with a
// reconnect backoff and the node's token, TLS to the control plane with
// its SPIFFE ID, admin API on loopback.
func Check(b *bootstrapv3.Bootstrap, want Want) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	// Identity: from the command line only, so one file serves every
	// instance and the deployment is the one place that names it.
	if b.GetNode().GetId() != "" || b.GetNode().GetCluster() != "" {
		fail("node id %q / cluster %q set in the file; pass --service-node and --service-cluster instead",
			b.GetNode().GetId(), b.GetNode().GetCluster())
	}
	meta := b.GetNode().GetMetadata().AsMap()
	if want.Sidecar {
		// The control plane reads these keys (numbers) to place the
		// sidecar's listeners; they must match DESIGN §7.
		cp := translate.DefaultConfig()
		for k, v := range map[string]any{serve.MetaInboundPort: float64(cp.InboundPort), serve.MetaOutboundPort: float64(cp.OutboundPort)} {
			if meta[k] != v {
				fail("node.metadata.%s = %v, want %v", k, meta[k], v)
			}
		}
	} else if len(meta) != 0 {
		fail("edge node metadata %v: the control plane reads none for the edge", meta)
	}

	// Static: the control plane's cluster, and the metrics listener with
	// its way to the admin API; nothing else.
	sr := b.GetStaticResources()
	if len(sr.GetSecrets()) != 0 {
		fail("static secrets: the control plane owns them")
	}
	clusters := map[string]*clusterv3.Cluster{}
	for _, c := range sr.GetClusters() {
		clusters[c.GetName()] = c
	}
	if len(clusters) != 2 || clusters["xds_cluster"] == nil || clusters["envoy_admin"] == nil {
		fail("static clusters %v: want only xds_cluster and envoy_admin", slices.Sorted(maps.Keys(clusters)))
		return problems
	}
	problems = append(problems, checkMetricsListener(b, clusters["envoy_admin"], want.AdminPort)...)
	xds := clusters["xds_cluster"]
	if got := endpointOf(xds); got != ControlPlaneAddr {
		fail("xds_cluster endpoint %s, want %s (DESIGN §7)", got, ControlPlaneAddr)
	}
	if xds.GetConnectTimeout().AsDuration() <= 0 {
		fail("xds_cluster has no connect timeout")
	}
	if ka := xds.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka.GetKeepaliveTime().GetValue() == 0 {
		fail("xds_cluster has no TCP keepalive")
	}
	var hpo upstreamhttpv3.HttpProtocolOptions
	packed := xds.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
	if packed == nil || packed.UnmarshalTo(&hpo) != nil {
		fail("xds_cluster has no HttpProtocolOptions")
	} else if h2 := hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions(); h2 == nil || h2.GetConnectionKeepalive().GetInterval().AsDuration() <= 0 {
		fail("xds_cluster must speak HTTP/2 (gRPC) with keepalive pings, got %v", hpo.GetExplicitHttpConfig())
	}

	// ADS: the wanted flavour, to xds_cluster, with a reconnect backoff;
	// listeners and clusters over it.
	dr := b.GetDynamicResources()
	ads := dr.GetAdsConfig()
	if ads.GetApiType() != want.APIType || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
		fail("ads_config api_type %s transport %s, want %s V3", ads.GetApiType(), ads.GetTransportApiVersion(), want.APIType)
	}
	if len(ads.GetGrpcServices()) != 1 || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "xds_cluster" {
		fail("ads_config must name one envoy_grpc service on xds_cluster")
		return problems
	}
	if ads.GetGrpcServices()[0].GetEnvoyGrpc().GetRetryPolicy().GetRetryBackOff() == nil {
		fail("ads_config has no retry backoff: a control plane down at start must be retried")
	}
	for name, src := range map[string]*corev3.ConfigSource{"lds_config": dr.GetLdsConfig(), "cds_config": dr.GetCdsConfig()} {
		if src.GetAds() == nil || src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
			fail("%s must come over ADS (v3)", name)
		}
	}

	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != want.AdminPort {
		fail("admin port %d, want %d (DESIGN §7)", got, want.AdminPort)
	}
	// The admin API can reconfigure and stop Envoy: loopback only.
	if got := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); got != "127.0.0.1" {
		fail("admin listens on %s, want 127.0.0.1 only", got)
	}

	// The node's Consul token travels on the ADS stream.
	var token []string
	for _, h := range ads.GetGrpcServices()[0].GetInitialMetadata() {
		if h.GetKey() == "x-consul-token" {
			token = append(token, h.GetValue())
		}
	}
	if !slices.Equal(token, []string{want.Token}) {
		fail("ADS initial_metadata x-consul-token %q, want the node's token from CONSUL_HTTP_TOKEN_FILE", token)
	}
	return append(problems, checkControlPlaneTLS(xds)...)
}

// endpointOf is a static cluster's first endpoint as host:port.
func endpointOf(c *clusterv3.Cluster) string {
	eps := c.GetLoadAssignment().GetEndpoints()
	if len(eps) == 0 || len(eps[0].GetLbEndpoints()) == 0 {
		return ""
	}
	sa := eps[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue())))
}

// checkControlPlaneTLS: xds_cluster speaks TLS (ALPN h2, which grpc-go
// servers require), trusts Consul's Connect CA roots only, and accepts
// only the control plane's SPIFFE ID, in any trust domain and datacenter.
func checkControlPlaneTLS(xds *clusterv3.Cluster) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ts := xds.GetTransportSocket()
	var tlsCtx tlsv3.UpstreamTlsContext
	if ts == nil || ts.GetTypedConfig().UnmarshalTo(&tlsCtx) != nil {
		fail("xds_cluster has no UpstreamTlsContext: the control plane serves TLS")
		return problems
	}
	common := tlsCtx.GetCommonTlsContext()
	if !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
		fail("xds_cluster ALPN %v, want [h2]", common.GetAlpnProtocols())
	}
	vc := common.GetValidationContext()
	if got := vc.GetTrustedCa().GetFilename(); got != ConnectCARoots {
		fail("xds_cluster trusts %q, want Consul's Connect CA roots %s", got, ConnectCARoots)
	}
	sans := vc.GetMatchTypedSubjectAltNames()
	if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || sans[0].GetMatcher().GetSafeRegex() == nil {
		fail("xds_cluster SAN matchers %v, want one URI safe_regex", sans)
		return problems
	}
	re, err := regexp.Compile(sans[0].GetMatcher().GetSafeRegex().GetRegex())
	if err != nil {
		fail("SAN regex: %v", err)
		return problems
	}
	for uri, want := range map[string]bool{
		"spiffe://0c7e1b8a-5d2f-4e3a-9b6c-1d2e3f4a5b6c.consul/ns/default/dc/dc1/svc/controlplane": true,
		"spiffe://other.consul/ns/default/dc/eu-1/svc/controlplane":                               true,
		"spiffe://0c7e1b8a.consul/ns/default/dc/dc1/svc/order":                                    false,
		"spiffe://0c7e1b8a.consul/ns/default/dc/dc1/svc/controlplane-rogue":                       false,
		"spiffe://0c7e1b8a.consul/ns/default/dc/dc1/svc/controlplane/x":                           false,
		"spiffe://0c7e1b8a.consul/ns/other/dc/dc1/svc/controlplane":                               false,
		"spiffe://0c7e1b8a.consul/agent/client/dc/dc1/id/controlplane":                            false,
	} {
		// Envoy matches the whole SAN (RE2); so does this.
		if got := re.MatchString(uri) && re.FindString(uri) == uri; got != want {
			fail("SAN %s accepted %v, want %v", uri, got, want)
		}
	}
	return problems
}

// checkMetricsListener: the only static listener serves GET
// /stats/prometheus on MetricsPort and routes it, and nothing else, to
// the admin API on the container's loopback.
func checkMetricsListener(b *bootstrapv3.Bootstrap, admin *clusterv3.Cluster, adminPort uint32) []string {
	var problems []string
	fail := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		fail("%d static listeners, want only the metrics listener (the control plane owns the rest)", len(ls))
		return problems
	}
	l := ls[0]
	sa := l.GetAddress().GetSocketAddress()
	if sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != MetricsPort {
		fail("metrics listener on %s:%d, want 0.0.0.0:%d", sa.GetAddress(), sa.GetPortValue(), MetricsPort)
	}
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		fail("metrics listener: want one filter chain with one filter")
		return problems
	}
	var hcm hcmv3.HttpConnectionManager
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		fail("metrics listener: not an HTTP connection manager: %v", err)
		return problems
	}
	var routes []string
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			m := r.GetMatch()
			if m.GetPath() == "" || m.GetPrefix() != "" || m.GetSafeRegex() != nil || m.GetPathSeparatedPrefix() != "" {
				fail("metrics route %v: want an exact path match", m)
			}
			routes = append(routes, m.GetPath()+" → "+r.GetRoute().GetCluster())
		}
	}
	if !slices.Equal(routes, []string{"/stats/prometheus → envoy_admin"}) {
		fail("metrics listener routes %v, want only /stats/prometheus → envoy_admin", routes)
	}
	if got, want := endpointOf(admin), net.JoinHostPort("127.0.0.1", strconv.Itoa(int(adminPort))); got != want {
		fail("envoy_admin points at %s, want the admin API %s", got, want)
	}
	return problems
}
