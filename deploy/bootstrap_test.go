package deploy

import (
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Types the bootstraps pack in Any fields: protojson resolves them
	// from the global registry.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"

	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
)

// bootstrapCase is one bootstrap file and what it must say.
type bootstrapCase struct {
	file      string
	apiType   corev3.ApiConfigSource_ApiType
	adminPort uint32
	sidecar   bool
}

var bootstrapCases = []bootstrapCase{
	{"sidecar-delta.yaml", corev3.ApiConfigSource_DELTA_GRPC, 15000, true},
	{"sidecar-sotw.yaml", corev3.ApiConfigSource_GRPC, 15000, true},
	{"edge-delta.yaml", corev3.ApiConfigSource_DELTA_GRPC, 9901, false},
	{"edge-sotw.yaml", corev3.ApiConfigSource_GRPC, 9901, false},
}

// envoyMetricsPort is every Envoy's read-only metrics listener (Istio's
// number), which Prometheus scrapes instead of the admin API.
const envoyMetricsPort = 15090

// sampleToken stands for a node's Consul ACL token (a UUID).
const sampleToken = "6f1c9a52-3e0b-4d7a-9b8e-2c5d4e6f7a81"

// renderBootstrap renders a bootstrap template the way envoy/entrypoint.sh
// does in the container: envoy/render-bootstrap.sh with a token file.
func renderBootstrap(t *testing.T, template, token string) ([]byte, error) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "render-bootstrap.sh"), template)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &renderError{err, stderr.String()}
	}
	return out, nil
}

type renderError struct {
	err    error
	stderr string
}

func (e *renderError) Error() string { return e.err.Error() + ": " + e.stderr }

// loadBootstrap renders a bootstrap template with sampleToken and parses
// it the way Envoy does: YAML → JSON → proto, every field known (unknown
// ones fail), then the proto's own validation rules, including the
// messages packed in Any fields.
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := renderBootstrap(t, path, sampleToken)
	if err != nil {
		t.Fatalf("render %s: %v", path, err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatalf("%s: not YAML: %v", path, err)
	}
	var b bootstrapv3.Bootstrap
	if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
		t.Fatalf("%s: not an Envoy v3 Bootstrap: %v", path, err)
	}
	if err := b.ValidateAll(); err != nil {
		t.Fatalf("%s: ValidateAll: %v", path, err)
	}
	if err := validateAnys(b.ProtoReflect()); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if dep := deprecatedFields(b.ProtoReflect(), ""); len(dep) > 0 {
		t.Errorf("%s sets deprecated fields (Envoy warns now and fails later): %s", path, strings.Join(dep, ", "))
	}
	return &b
}

// validateAnys runs ValidateAll on every message packed in an Any, which
// the outer message's ValidateAll does not look into.
func validateAnys(m protoreflect.Message) error {
	var err error
	walk(m, func(_ string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		if err != nil || fd.Kind() != protoreflect.MessageKind || fd.Message().FullName() != "google.protobuf.Any" {
			return
		}
		a := v.Message().Interface().(*anypb.Any)
		inner, uerr := a.UnmarshalNew()
		if uerr != nil {
			err = uerr
			return
		}
		if vv, ok := inner.(interface{ ValidateAll() error }); ok {
			if verr := vv.ValidateAll(); verr != nil {
				err = verr
				return
			}
		}
		err = validateAnys(inner.ProtoReflect())
	})
	return err
}

// deprecatedFields lists the set fields and enum values marked deprecated,
// looking into Any fields too.
func deprecatedFields(m protoreflect.Message, prefix string) []string {
	var out []string
	walk(m, func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value) {
		if opts, ok := fd.Options().(*descriptorpb.FieldOptions); ok && opts.GetDeprecated() {
			out = append(out, prefix+path)
		}
		if fd.Kind() == protoreflect.EnumKind && !fd.IsList() {
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				if opts, ok := ev.Options().(*descriptorpb.EnumValueOptions); ok && opts.GetDeprecated() {
					out = append(out, prefix+path+"="+string(ev.Name()))
				}
			}
		}
		if fd.Kind() == protoreflect.MessageKind && fd.Message().FullName() == "google.protobuf.Any" {
			if inner, err := v.Message().Interface().(*anypb.Any).UnmarshalNew(); err == nil {
				out = append(out, deprecatedFields(inner.ProtoReflect(), prefix+path+"/")...)
			}
		}
	})
	return out
}

// walk calls fn for every set field of m and its sub-messages (list and
// map elements included), with a dotted path.
func walk(m protoreflect.Message, fn func(path string, fd protoreflect.FieldDescriptor, v protoreflect.Value)) {
	var visit func(m protoreflect.Message, path string)
	visit = func(m protoreflect.Message, path string) {
		m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
			p := path + string(fd.Name())
			switch {
			case fd.IsList():
				l := v.List()
				for i := range l.Len() {
					fn(p, fd, l.Get(i))
					if fd.Kind() == protoreflect.MessageKind {
						visit(l.Get(i).Message(), p+"[].")
					}
				}
			case fd.IsMap():
				v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
					if fd.MapValue().Kind() == protoreflect.MessageKind {
						fn(p+"["+k.String()+"]", fd.MapValue(), mv)
						visit(mv.Message(), p+"["+k.String()+"].")
					}
					return true
				})
			default:
				fn(p, fd, v)
				if fd.Kind() == protoreflect.MessageKind {
					visit(v.Message(), p+".")
				}
			}
			return true
		})
	}
	visit(m, "")
}

func TestEveryBootstrapIsTested(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "envoy", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(bootstrapCases, func(c bootstrapCase) bool { return c.file == filepath.Base(f) }) {
			t.Errorf("envoy/%s has no case in bootstrapCases", filepath.Base(f))
		}
	}
}

func TestBootstraps(t *testing.T) {
	cp := translate.DefaultConfig()
	for _, tc := range bootstrapCases {
		t.Run(tc.file, func(t *testing.T) {
			b := loadBootstrap(t, filepath.Join(repoRoot(t), "envoy", tc.file))

			// Identity: from the command line only, so one file serves
			// every instance and compose is the one place that names it.
			if b.GetNode().GetId() != "" || b.GetNode().GetCluster() != "" {
				t.Errorf("node id %q / cluster %q set in the file; pass --service-node and --service-cluster instead",
					b.GetNode().GetId(), b.GetNode().GetCluster())
			}
			meta := b.GetNode().GetMetadata().AsMap()
			if tc.sidecar {
				// The control plane reads these keys (numbers) to place the
				// sidecar's listeners; they must match DESIGN §7.
				want := map[string]any{
					serve.MetaInboundPort:  float64(cp.InboundPort),
					serve.MetaOutboundPort: float64(cp.OutboundPort),
				}
				for k, v := range want {
					if meta[k] != v {
						t.Errorf("node.metadata.%s = %v, want %v", k, meta[k], v)
					}
				}
			} else if len(meta) != 0 {
				t.Errorf("edge node metadata %v: the control plane reads none for the edge", meta)
			}

			// Static: the control plane's cluster, and the metrics listener
			// with its way to the admin API; nothing else.
			sr := b.GetStaticResources()
			if len(sr.GetSecrets()) != 0 {
				t.Errorf("static secrets: the control plane owns them")
			}
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range sr.GetClusters() {
				clusters[c.GetName()] = c
			}
			if len(clusters) != 2 || clusters["xds_cluster"] == nil || clusters["envoy_admin"] == nil {
				t.Fatalf("static clusters %v: want only xds_cluster and envoy_admin", slices.Sorted(maps.Keys(clusters)))
			}
			checkMetricsListener(t, b, clusters["envoy_admin"], tc.adminPort)
			xds := clusters["xds_cluster"]
			sa := xds.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if got := net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))); got != "controlplane:18000" {
				t.Errorf("xds_cluster endpoint %s, want controlplane:18000 (DESIGN §7)", got)
			}
			if xds.GetConnectTimeout().AsDuration() <= 0 {
				t.Errorf("xds_cluster has no connect timeout")
			}
			if ka := xds.GetUpstreamConnectionOptions().GetTcpKeepalive(); ka.GetKeepaliveTime().GetValue() == 0 {
				t.Errorf("xds_cluster has no TCP keepalive")
			}
			var hpo upstreamhttpv3.HttpProtocolOptions
			packed := xds.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
			if packed == nil || packed.UnmarshalTo(&hpo) != nil {
				t.Fatalf("xds_cluster has no HttpProtocolOptions")
			}
			h2 := hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions()
			if h2 == nil || h2.GetConnectionKeepalive().GetInterval().AsDuration() <= 0 {
				t.Errorf("xds_cluster must speak HTTP/2 (gRPC) with keepalive pings, got %v", hpo.GetExplicitHttpConfig())
			}

			// ADS: the wanted flavour, to xds_cluster, with a reconnect
			// backoff; listeners and clusters over it.
			dr := b.GetDynamicResources()
			ads := dr.GetAdsConfig()
			if ads.GetApiType() != tc.apiType || ads.GetTransportApiVersion() != corev3.ApiVersion_V3 {
				t.Errorf("ads_config api_type %s transport %s, want %s V3", ads.GetApiType(), ads.GetTransportApiVersion(), tc.apiType)
			}
			if len(ads.GetGrpcServices()) != 1 || ads.GetGrpcServices()[0].GetEnvoyGrpc().GetClusterName() != "xds_cluster" {
				t.Fatalf("ads_config must name one envoy_grpc service on xds_cluster")
			}
			if ads.GetGrpcServices()[0].GetEnvoyGrpc().GetRetryPolicy().GetRetryBackOff() == nil {
				t.Errorf("ads_config has no retry backoff: a control plane down at start must be retried")
			}
			for name, src := range map[string]*corev3.ConfigSource{"lds_config": dr.GetLdsConfig(), "cds_config": dr.GetCdsConfig()} {
				if src.GetAds() == nil || src.GetResourceApiVersion() != corev3.ApiVersion_V3 {
					t.Errorf("%s must come over ADS (v3)", name)
				}
			}

			if got := b.GetAdmin().GetAddress().GetSocketAddress().GetPortValue(); got != tc.adminPort {
				t.Errorf("admin port %d, want %d (DESIGN §7)", got, tc.adminPort)
			}
			// The admin API can reconfigure and stop Envoy: loopback only.
			if got := b.GetAdmin().GetAddress().GetSocketAddress().GetAddress(); got != "127.0.0.1" {
				t.Errorf("admin listens on %s, want 127.0.0.1 only", got)
			}

			// The node's Consul token travels on the ADS stream.
			var token []string
			for _, h := range ads.GetGrpcServices()[0].GetInitialMetadata() {
				if h.GetKey() == "x-consul-token" {
					token = append(token, h.GetValue())
				}
			}
			if !slices.Equal(token, []string{sampleToken}) {
				t.Errorf("ADS initial_metadata x-consul-token %q, want the node's token from CONSUL_HTTP_TOKEN_FILE", token)
			}
			checkControlPlaneTLS(t, xds)
		})
	}
}

// checkControlPlaneTLS: xds_cluster speaks TLS (ALPN h2, which grpc-go
// servers require), trusts Consul's Connect CA roots only, and accepts
// only the control plane's SPIFFE ID, in any trust domain and datacenter.
func checkControlPlaneTLS(t *testing.T, xds *clusterv3.Cluster) {
	t.Helper()
	ts := xds.GetTransportSocket()
	var tlsCtx tlsv3.UpstreamTlsContext
	if ts == nil || ts.GetTypedConfig().UnmarshalTo(&tlsCtx) != nil {
		t.Fatalf("xds_cluster has no UpstreamTlsContext: the control plane serves TLS")
	}
	common := tlsCtx.GetCommonTlsContext()
	if !slices.Equal(common.GetAlpnProtocols(), []string{"h2"}) {
		t.Errorf("xds_cluster ALPN %v, want [h2]", common.GetAlpnProtocols())
	}
	vc := common.GetValidationContext()
	if got := vc.GetTrustedCa().GetFilename(); got != connectCARoots {
		t.Errorf("xds_cluster trusts %q, want Consul's Connect CA roots %s", got, connectCARoots)
	}
	sans := vc.GetMatchTypedSubjectAltNames()
	if len(sans) != 1 || sans[0].GetSanType() != tlsv3.SubjectAltNameMatcher_URI || sans[0].GetMatcher().GetSafeRegex() == nil {
		t.Fatalf("xds_cluster SAN matchers %v, want one URI safe_regex", sans)
	}
	re, err := regexp.Compile(sans[0].GetMatcher().GetSafeRegex().GetRegex())
	if err != nil {
		t.Fatalf("SAN regex: %v", err)
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
			t.Errorf("SAN %s accepted %v, want %v", uri, got, want)
		}
	}
}

// checkMetricsListener: the only static listener serves GET
// /stats/prometheus on envoyMetricsPort and routes it, and nothing else,
// to the admin API on the container's loopback.
func checkMetricsListener(t *testing.T, b *bootstrapv3.Bootstrap, admin *clusterv3.Cluster, adminPort uint32) {
	t.Helper()
	ls := b.GetStaticResources().GetListeners()
	if len(ls) != 1 {
		t.Fatalf("%d static listeners, want only the metrics listener (the control plane owns the rest)", len(ls))
	}
	l := ls[0]
	sa := l.GetAddress().GetSocketAddress()
	if sa.GetAddress() != "0.0.0.0" || sa.GetPortValue() != envoyMetricsPort {
		t.Errorf("metrics listener on %s:%d, want 0.0.0.0:%d", sa.GetAddress(), sa.GetPortValue(), envoyMetricsPort)
	}
	if len(l.GetFilterChains()) != 1 || len(l.GetFilterChains()[0].GetFilters()) != 1 {
		t.Fatalf("metrics listener: want one filter chain with one filter")
	}
	var hcm hcmv3.HttpConnectionManager
	if err := l.GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm); err != nil {
		t.Fatalf("metrics listener: not an HTTP connection manager: %v", err)
	}
	var routes []string
	for _, vh := range hcm.GetRouteConfig().GetVirtualHosts() {
		for _, r := range vh.GetRoutes() {
			m := r.GetMatch()
			if m.GetPath() == "" || m.GetPrefix() != "" || m.GetSafeRegex() != nil || m.GetPathSeparatedPrefix() != "" {
				t.Errorf("metrics route %v: want an exact path match", m)
			}
			routes = append(routes, m.GetPath()+" → "+r.GetRoute().GetCluster())
		}
	}
	if !slices.Equal(routes, []string{"/stats/prometheus → envoy_admin"}) {
		t.Errorf("metrics listener routes %v, want only /stats/prometheus → envoy_admin", routes)
	}
	ep := admin.GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
	if got := net.JoinHostPort(ep.GetAddress(), strconv.Itoa(int(ep.GetPortValue()))); got != net.JoinHostPort("127.0.0.1", strconv.Itoa(int(adminPort))) {
		t.Errorf("envoy_admin points at %s, want the admin API 127.0.0.1:%d", got, adminPort)
	}
}

// TestBootstrapTemplatesNeedAToken: render-bootstrap.sh refuses a token
// file that does not hold a Consul token (so nothing but a UUID lands in
// the YAML), and every template has the placeholder.
func TestBootstrapTemplatesNeedAToken(t *testing.T) {
	for _, tc := range bootstrapCases {
		path := filepath.Join(repoRoot(t), "envoy", tc.file)
		for _, bad := range []string{"", "not-a-token", sampleToken + `"` + "\n" + "admin: {}", sampleToken + "\n" + sampleToken, strings.ToUpper(sampleToken)} {
			if _, err := renderBootstrap(t, path, bad); err == nil {
				t.Errorf("%s rendered with token %q", tc.file, bad)
			}
		}
	}
	if _, err := renderBootstrap(t, filepath.Join(repoRoot(t), "observability", "prometheus", "prometheus.yml"), sampleToken); err == nil {
		t.Errorf("a file without @CONSUL_TOKEN@ rendered")
	}
}

// TestEntrypointStartsEnvoyWithTheRenderedBootstrap runs envoy/entrypoint.sh
// with a stand-in envoy on PATH: it gets every argument unchanged except
// -c, which names the rendered copy (owner-only) of the template.
func TestEntrypointStartsEnvoyWithTheRenderedBootstrap(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "envoy")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/docker-entrypoint.sh"); err == nil {
		t.Skip("/docker-entrypoint.sh exists here: entrypoint.sh would hand over to it")
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(sampleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	template := filepath.Join(repoRoot(t), "envoy", "sidecar-delta.yaml")
	cmd := exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "entrypoint.sh"),
		"--service-node", "order-1", "-c", template, "--service-cluster", "order")
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "TMPDIR="+dir, "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("entrypoint.sh: %v\n%s", err, out)
	}
	rendered := filepath.Join(dir, "envoy-bootstrap.yaml")
	if got, want := strings.Fields(string(out)), []string{"--service-node", "order-1", "-c", rendered, "--service-cluster", "order"}; !slices.Equal(got, want) {
		t.Errorf("envoy ran with %v, want %v", got, want)
	}
	got, err := os.ReadFile(rendered)
	if err != nil {
		t.Fatal(err)
	}
	want, err := renderBootstrap(t, template, sampleToken)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("the bootstrap Envoy got is not the rendered template")
	}
	if fi, err := os.Stat(rendered); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rendered bootstrap mode %v, want 0600 (it holds the token)", fi.Mode().Perm())
	}
	cmd = exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "entrypoint.sh"), "--service-node", "order-1")
	cmd.Env = cmd.Env[:0]
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "TMPDIR="+dir, "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("entrypoint.sh without -c started envoy: %s", out)
	}
}

// TestDeltaAndSotwDifferOnlyInAPIType keeps each pair from drifting apart.
func TestDeltaAndSotwDifferOnlyInAPIType(t *testing.T) {
	for _, role := range []string{"sidecar", "edge"} {
		t.Run(role, func(t *testing.T) {
			dir := filepath.Join(repoRoot(t), "envoy")
			delta := loadBootstrap(t, filepath.Join(dir, role+"-delta.yaml"))
			sotw := loadBootstrap(t, filepath.Join(dir, role+"-sotw.yaml"))
			sotw.GetDynamicResources().GetAdsConfig().ApiType = delta.GetDynamicResources().GetAdsConfig().GetApiType()
			if !proto.Equal(delta, sotw) {
				t.Errorf("%s-delta.yaml and %s-sotw.yaml differ in more than ads_config.api_type", role, role)
			}
		})
	}
}

func TestEdgeClusterNameMatchesTheControlPlane(t *testing.T) {
	// compose passes --service-cluster edge; the control plane recognises
	// the edge by that name (one shared snapshot).
	if !translate.IsEdge("edge") {
		t.Fatal(`the control plane no longer treats node cluster "edge" as the edge; update docker-compose.yml and envoy/`)
	}
}
