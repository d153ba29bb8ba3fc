package translate_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// TestEdgeTokenRequirements reads the edge's jwt_authn rules as Envoy
// applies them (first match wins; a rule without a requirement checks
// nothing) and checks which requests need a user's bearer token.
func TestEdgeTokenRequirements(t *testing.T) {
	rules := edgeJWTRules(t)
	tests := []struct {
		method, path string
		want         bool
	}{
		{"POST", "/api/auth/register", false},
		{"POST", "/api/auth/login", false},
		{"GET", "/api/auth/jwks", false},
		{"HEAD", "/api/auth/jwks", false},
		{"GET", "/api/auth/login", true},
		{"POST", "/api/auth/jwks", true},
		{"POST", "/api/auth/login/x", true},
		{"GET", "/api/products", false},
		{"GET", "/api/products?limit=1&cursor=abc", false},
		{"GET", "/api/products/p1", false},
		{"HEAD", "/api/products/p1", false},
		{"POST", "/api/products", true}, // role admin, which product checks
		{"PUT", "/api/products/p1", true},
		{"DELETE", "/api/products/p1", true},
		{"GET", "/api/productsx", true},
		{"GET", "/api/users/me", true},
		{"GET", "/api/users/u1", true},
		{"POST", "/api/orders", true},
		{"GET", "/api/orders", true},
		{"GET", "/api/orders/o1", true},
		{"GET", "/api/payments/p1", true},
		{"GET", "/api/notifications", true},
		{"GET", "/api/anything-registered-later", true},
		{"GET", "/api", true},
		{"GET", "/health", false}, // no route: Envoy's JSON 404
		{"GET", "/apix", false},
	}
	for _, tt := range tests {
		if got := tokenRequired(t, rules, tt.method, tt.path); got != tt.want {
			t.Errorf("%s %s: token required = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}

// edgeJWTRules builds the edge of a mesh with auth and product and
// returns its jwt_authn configuration's rules, checking the provider.
func edgeJWTRules(t *testing.T) []*jwtv3.RequirementRule {
	t.Helper()
	meta := func(prefix string) map[string]string {
		return map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "mesh_public_prefixes": prefix}
	}
	s := &catalog.Snapshot{Services: pmap.FromMap(map[string][]catalog.Instance{
		"auth":    {{ID: "auth-1", Service: "auth", Address: "10.0.0.1", Port: 15006, Status: "passing", Meta: meta("/auth")}},
		"product": {{ID: "product-1", Service: "product", Address: "10.0.0.2", Port: 15006, Status: "passing", Meta: meta("/products")}},
	})}
	m := model.NewBuilder(model.BuilderOptions{}).Build(s)
	res, err := translate.FromScratch(m, translate.Node{Edge: true}, translate.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	var conn hcmv3.HttpConnectionManager
	if err := res.Listeners[0].FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(&conn); err != nil {
		t.Fatal(err)
	}
	var names []string
	var jwt jwtv3.JwtAuthentication
	for _, f := range conn.HttpFilters {
		names = append(names, f.Name)
		if f.Name == translate.FilterJWTAuthn {
			if err := f.GetTypedConfig().UnmarshalTo(&jwt); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, want := strings.Join(names, " "), "envoy.filters.http.cors envoy.filters.http.local_ratelimit envoy.filters.http.jwt_authn envoy.filters.http.router"; got != want {
		t.Fatalf("edge HTTP filters %q, want %q", got, want)
	}
	p := jwt.Providers[translate.JWTProvider]
	if p.GetRemoteJwks().GetHttpUri().GetCluster() != translate.UpstreamCluster(translate.AuthService) || !p.GetForward() ||
		p.GetIssuer() != translate.AuthIssuer || len(p.GetAudiences()) != 1 || p.GetAudiences()[0] != translate.AuthAudience {
		t.Errorf("provider %s: %v", translate.JWTProvider, p)
	}
	if !jwt.BypassCorsPreflight {
		t.Error("CORS preflights (no token by design) are not bypassed")
	}
	for _, r := range jwt.Rules {
		if req := r.GetRequires(); req != nil && req.GetProviderName() != translate.JWTProvider {
			t.Errorf("rule %v requires %v, not provider %s", r.Match, req, translate.JWTProvider)
		}
	}
	return jwt.Rules
}

// tokenRequired is what Envoy's jwt_authn decides for a request: the
// first rule whose path and :method match says; no rule, no check.
func tokenRequired(t *testing.T, rules []*jwtv3.RequirementRule, method, path string) bool {
	t.Helper()
	path, _, _ = strings.Cut(path, "?")
	for _, r := range rules {
		if matchPath(t, r.Match, path) && matchHeaders(t, r.Match.Headers, method) {
			return r.GetRequires() != nil
		}
	}
	return false
}

func matchPath(t *testing.T, m *routev3.RouteMatch, path string) bool {
	switch ps := m.PathSpecifier.(type) {
	case *routev3.RouteMatch_Path:
		return path == ps.Path
	case *routev3.RouteMatch_Prefix:
		return strings.HasPrefix(path, ps.Prefix)
	case *routev3.RouteMatch_PathSeparatedPrefix:
		return path == ps.PathSeparatedPrefix || strings.HasPrefix(path, ps.PathSeparatedPrefix+"/")
	}
	t.Fatalf("rule path matcher %T not understood by this test", m.PathSpecifier)
	return false
}

func matchHeaders(t *testing.T, hs []*routev3.HeaderMatcher, method string) bool {
	for _, h := range hs {
		sm := h.GetStringMatch()
		if h.Name != ":method" || sm == nil {
			t.Fatalf("rule header matcher %v not understood by this test", h)
		}
		ok := sm.GetExact() == method
		if re := sm.GetSafeRegex().GetRegex(); re != "" {
			ok = regexp.MustCompile(re).MatchString(method)
		}
		if !ok {
			return false
		}
	}
	return true
}

// TestEdgeHTTPSSecretFile checks the SDS file compose gives the edge
// (deploy/tls/edge-https-sds.yaml, mounted where MESH_EDGE_TLS_FILE points
// by default): one valid secret of the name the edge listener asks for,
// whose certificate and key are files beside it.
func TestEdgeHTTPSSecretFile(t *testing.T) {
	const file = "../../deploy/tls/edge-https-sds.yaml"
	if filepath.Base(file) != filepath.Base(translate.DefaultEdgeTLSFile) {
		t.Fatalf("compose mounts %s, the control plane's default is %s", file, translate.DefaultEdgeTLSFile)
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	var resp discoveryv3.DiscoveryResponse
	if err := protojson.Unmarshal(js, &resp); err != nil {
		t.Fatalf("%s is no DiscoveryResponse: %v", file, err)
	}
	if len(resp.Resources) != 1 {
		t.Fatalf("%s holds %d resources, want the secret only", file, len(resp.Resources))
	}
	var s tlsv3.Secret
	if err := resp.Resources[0].UnmarshalTo(&s); err != nil {
		t.Fatal(err)
	}
	if err := translate.Validate(&s); err != nil {
		t.Error(err)
	}
	dir := filepath.Dir(translate.DefaultEdgeTLSFile)
	cert, key := s.GetTlsCertificate().GetCertificateChain().GetFilename(), s.GetTlsCertificate().GetPrivateKey().GetFilename()
	if s.Name != translate.SecretEdgeHTTPS || filepath.Dir(cert) != dir || filepath.Dir(key) != dir {
		t.Errorf("secret %q with certificate %q and key %q; want %q with both in %s", s.Name, cert, key, translate.SecretEdgeHTTPS, dir)
	}
}
