package translate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/out")

func TestGolden(t *testing.T) {
	inputs, err := filepath.Glob("testdata/in/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(in)
			if err != nil {
				t.Fatal(err)
			}
			gc, err := translate.ParseCatalogFile(raw)
			if err != nil {
				t.Fatalf("%s: %v", in, err)
			}
			m := model.NewBuilder(model.BuilderOptions{}).Build(gc.Snapshot())
			res, err := translate.FromScratch(m, gc.Node.TranslateNode(), gc.Config())
			if err != nil {
				t.Fatalf("translate: %v", err)
			}
			byType := res.ByType()
			checkValidAndConsistent(t, byType, gc.Node.Flavor == translate.FlavorProxyless)

			files := map[string][]byte{
				"clusters":  render(t, byType[resource.ClusterType]),
				"endpoints": render(t, byType[resource.EndpointType]),
				"listeners": render(t, byType[resource.ListenerType]),
				"routes":    render(t, byType[resource.RouteType]),
			}
			if len(m.Problems) > 0 {
				b, err := yaml.Marshal(m.Problems)
				if err != nil {
					t.Fatal(err)
				}
				files["problems"] = b
			}
			for typ, got := range files {
				path := filepath.Join("testdata", "out", name+"."+typ+".yaml")
				if *update {
					if err := os.WriteFile(path, got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatalf("%v (run go test ./translate -update to create it)", err)
				}
				if diff := cmp.Diff(string(want), string(got)); diff != "" {
					t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
				}
			}
			if !*update {
				stale, _ := filepath.Glob(filepath.Join("testdata", "out", name+".*.yaml"))
				for _, p := range stale {
					typ := strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), name+"."), ".yaml")
					if _, ok := files[typ]; !ok {
						t.Errorf("%s is not produced any more; delete it", p)
					}
				}
			}
		})
	}
}

// checkValidAndConsistent is what serve requires before SetSnapshot. A
// proxyless node's listeners are API listeners, whose route names
// go-control-plane's Consistent() does not follow: translate.References
// does, and is checked for every flavour.
func checkValidAndConsistent(t *testing.T, byType map[resource.Type][]types.Resource, apiListeners bool) {
	t.Helper()
	for typ, rs := range byType {
		for _, r := range rs {
			if err := translate.Validate(r); err != nil {
				t.Errorf("%s %s: %v", typ, cachev3.GetResourceName(r), err)
			}
		}
	}
	// Envoy compiles safe_regex patterns with RE2 at load time, past what
	// proto validation checks; Go's regexp speaks the same syntax.
	for _, rs := range byType {
		for _, r := range rs {
			forEachRegex(r.ProtoReflect(), func(re string) {
				if _, err := regexp.Compile(re); err != nil {
					t.Errorf("%s: regex %q does not compile: %v", cachev3.GetResourceName(r), re, err)
				}
			})
		}
	}
	for _, dep := range [][2]resource.Type{{resource.ClusterType, resource.EndpointType}, {resource.ListenerType, resource.RouteType}} {
		var refs, have []string
		for _, r := range byType[dep[0]] {
			refs = append(refs, translate.References(r)...)
		}
		for _, r := range byType[dep[1]] {
			have = append(have, cachev3.GetResourceName(r))
		}
		slices.Sort(refs)
		slices.Sort(have)
		if diff := cmp.Diff(slices.Compact(refs), have); diff != "" {
			t.Errorf("%s named by references (-) and present (+):\n%s", dep[1], diff)
		}
	}
	checkIdentitySources(t, byType, apiListeners)
	if apiListeners {
		return
	}
	snap, err := cachev3.NewSnapshot("1", byType)
	if err != nil {
		t.Fatal(err)
	}
	if err := snap.Consistent(); err != nil {
		t.Errorf("snapshot not consistent: %v", err)
	}
}

// checkIdentitySources checks where TLS contexts take certificates from:
// a gRPC node only from the bootstrap's certificate provider (it NACKs
// SDS), an Envoy only from the two SDS secrets of the mesh, over ADS, and
// the edge's HTTPS certificate from an SDS file of its own.
func checkIdentitySources(t *testing.T, byType map[resource.Type][]types.Resource, grpc bool) {
	t.Helper()
	for _, rs := range byType {
		for _, r := range rs {
			forEach(r.ProtoReflect(), func(m protoreflect.Message) {
				switch x := m.Interface().(type) {
				case *tlsv3.SdsSecretConfig:
					if !grpc && x.GetName() == translate.SecretEdgeHTTPS && x.GetSdsConfig().GetPathConfigSource().GetPath() != "" {
						break // the edge's HTTPS certificate, from a file of the edge's
					}
					if grpc || (x.GetName() != translate.SecretIdentity && x.GetName() != translate.SecretRoots) || x.GetSdsConfig().GetAds() == nil {
						t.Errorf("%s: SDS secret %q (over ADS: %v) in a %s node", cachev3.GetResourceName(r), x.GetName(), x.GetSdsConfig().GetAds() != nil, flavour(grpc))
					}
				case *tlsv3.CertificateProviderPluginInstance:
					if !grpc || x.GetInstanceName() != translate.CertificateProviderInstance {
						t.Errorf("%s: certificate provider instance %q in a %s node", cachev3.GetResourceName(r), x.GetInstanceName(), flavour(grpc))
					}
				}
			})
		}
	}
}

func flavour(grpc bool) string {
	if grpc {
		return "gRPC"
	}
	return "Envoy"
}

// forEachRegex calls f with every RegexMatcher pattern in m, including
// inside packed Any messages.
func forEachRegex(m protoreflect.Message, f func(string)) {
	forEach(m, func(m protoreflect.Message) {
		if rm, ok := m.Interface().(*matcherv3.RegexMatcher); ok {
			f(rm.GetRegex())
		}
	})
}

// forEach calls f with m and every message in it, including inside
// packed Any messages.
func forEach(m protoreflect.Message, f func(protoreflect.Message)) {
	f(m)
	if a, ok := m.Interface().(*anypb.Any); ok {
		if inner, err := a.UnmarshalNew(); err == nil {
			forEach(inner.ProtoReflect(), f)
		}
		return
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.Message() == nil:
		case fd.IsList():
			for i := range v.List().Len() {
				forEach(v.List().Get(i).Message(), f)
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
					forEach(mv.Message(), f)
					return true
				})
			}
		default:
			forEach(v.Message(), f)
		}
		return true
	})
}

// render writes resources as YAML, one list per type, in name order.
func render(t *testing.T, rs []types.Resource) []byte {
	t.Helper()
	var list []json.RawMessage
	for _, r := range rs {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		list = append(list, b)
	}
	if list == nil {
		list = []json.RawMessage{}
	}
	j, err := json.Marshal(list)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.JSONToYAML(j)
	if err != nil {
		t.Fatal(err)
	}
	return y
}

// TestRegexWalkerFindsPatterns keeps forEachRegex honest: the edge
// configuration has method and rewrite patterns in its routes and the
// CORS origin pattern inside a packed Any.
func TestRegexWalkerFindsPatterns(t *testing.T) {
	s := &catalog.Snapshot{Services: pmap.FromMap(map[string][]catalog.Instance{
		"user": {{ID: "user-1", Service: "user", Address: "10.0.0.1", Port: 1, Status: "passing",
			Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "mesh_public_prefixes": "/users"}}},
	})}
	m := model.NewBuilder(model.BuilderOptions{}).Build(s)
	res, err := translate.FromScratch(m, translate.Node{Edge: true}, translate.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	forEachRegex(res.Routes[0].ProtoReflect(), func(re string) {
		if !slices.Contains(got, re) {
			got = append(got, re)
		}
	})
	slices.Sort(got)
	want := []string{".*", "^(GET|HEAD|OPTIONS|PUT|DELETE)$", "^/api"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patterns (-want +got):\n%s", diff)
	}
}

func TestSidecarErrors(t *testing.T) {
	s := &catalog.Snapshot{Services: pmap.FromMap(map[string][]catalog.Instance{
		"user": {{ID: "user-1", Service: "user", Address: "10.0.0.1", Port: 1, Status: "passing",
			Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "x"}}},
	})}
	m := model.NewBuilder(model.BuilderOptions{}).Build(s)
	cfg := translate.DefaultConfig()
	if _, err := translate.FromScratch(m, translate.Node{ID: "ghost-1"}, cfg); !errors.Is(err, translate.ErrUnknownNode) {
		t.Errorf("unknown node: err = %v, want ErrUnknownNode", err)
	}
	if _, err := translate.FromScratch(m, translate.Node{ID: "user-1"}, cfg); !errors.Is(err, translate.ErrNoAppPort) {
		t.Errorf("bad app port: err = %v, want ErrNoAppPort", err)
	}

	s = &catalog.Snapshot{Services: pmap.FromMap(map[string][]catalog.Instance{
		"user": {{ID: "user-1", Service: "user", Address: "10.0.0.1", Port: 15006, Status: "passing",
			Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080"}}},
	})}
	m = model.NewBuilder(model.BuilderOptions{}).Build(s)
	if _, err := translate.FromScratch(m, translate.Node{ID: "user-1", InboundPort: 16006}, cfg); !errors.Is(err, translate.ErrInboundPortMoved) {
		t.Errorf("inbound port moved by metadata: err = %v, want ErrInboundPortMoved", err)
	}
	if _, err := translate.FromScratch(m, translate.Node{ID: "user-1", InboundPort: 15006, OutboundPort: 16001}, cfg); err != nil {
		t.Errorf("inbound port as registered: %v", err)
	}
}

// TestValidateCatchesPackedErrors proves Validate looks inside Any: a
// listener whose connection manager lacks its stat prefix passes the
// listener's own ValidateAll but must fail here.
func TestValidateCatchesPackedErrors(t *testing.T) {
	s := &catalog.Snapshot{Services: pmap.FromMap(map[string][]catalog.Instance{
		"user": {{ID: "user-1", Service: "user", Address: "10.0.0.1", Port: 1, Status: "passing",
			Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080"}}},
	})}
	m := model.NewBuilder(model.BuilderOptions{}).Build(s)
	cfg := translate.DefaultConfig()
	cfg.RateLimit.Interval = 0 // Envoy requires a positive fill interval
	res, err := translate.FromScratch(m, translate.Node{Edge: true}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	l := res.Listeners[0]
	if err := l.ValidateAll(); err != nil {
		t.Fatalf("top-level ValidateAll unexpectedly failed: %v", err)
	}
	err = translate.Validate(l)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("FillInterval")) {
		t.Errorf("Validate = %v, want an error about the token bucket's fill interval", err)
	}
}
