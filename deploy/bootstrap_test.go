package deploy

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// Types the bootstraps pack in Any fields: protojson resolves them
	// from the global registry.
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

// loadBootstrap parses an Envoy bootstrap the way Envoy does: YAML → JSON
// → proto, every field known (unknown ones fail), then the proto's own
// validation rules, including the messages packed in Any fields.
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
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

			// Static: the control plane's cluster and nothing else.
			sr := b.GetStaticResources()
			if len(sr.GetListeners()) != 0 || len(sr.GetSecrets()) != 0 {
				t.Errorf("static listeners or secrets: the control plane owns them")
			}
			if len(sr.GetClusters()) != 1 || sr.GetClusters()[0].GetName() != "xds_cluster" {
				t.Fatalf("static clusters: want only xds_cluster, got %d", len(sr.GetClusters()))
			}
			xds := sr.GetClusters()[0]
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
		})
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
