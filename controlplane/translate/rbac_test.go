package translate

import (
	"fmt"
	"regexp"
	"strings"
	"testing"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshop/meshop/controlplane/model"
)

const testTrustDomain = "11111111-2222-3333-4444-555555555555.consul"

// call is one request as RBAC sees it: the caller's URI SAN and the
// request's path, method and headers.
type call struct {
	from    string // a service name ("" for no certificate)
	dc      string // "" means dc1
	path    string
	method  string
	headers map[string]string
}

func (c call) uri() string {
	if c.from == "" {
		return ""
	}
	dc := c.dc
	if dc == "" {
		dc = "dc1"
	}
	return fmt.Sprintf("spiffe://%s/ns/default/dc/%s/svc/%s", testTrustDomain, dc, c.from)
}

func (c call) header(name string) (string, bool) {
	switch name {
	case ":method":
		return c.method, true
	case ":path":
		return c.path, true
	}
	v, ok := c.headers[name]
	return v, ok
}

// TestRBACFromIntentions evaluates the RBAC rules translated from
// intentions on calls, with the semantics Envoy and gRPC give the parts
// used (allowed: some policy has a matching principal and permission).
func TestRBACFromIntentions(t *testing.T) {
	allow := func(name string) model.IntentionSource {
		return model.IntentionSource{Name: name, Action: model.IntentionAllow}
	}
	deny := func(name string) model.IntentionSource {
		return model.IntentionSource{Name: name, Action: model.IntentionDeny}
	}
	perm := func(a model.IntentionAction, m model.HTTPMatch) model.IntentionPermission {
		return model.IntentionPermission{Action: a, HTTP: m}
	}
	lookup := "/meshop.user.v1.Users/Lookup"
	del := "/meshop.user.v1.Users/Delete"
	grpcCall := func(from, path string) call { return call{from: from, path: path, method: "POST"} }
	for _, tc := range []struct {
		name    string
		sources []model.IntentionSource
		allowed []call
		denied  []call
	}{
		{
			name:   "no intentions: every call is denied",
			denied: []call{grpcCall("order", lookup), grpcCall("user", lookup)},
		},
		{
			name:    "an allowed source, nobody else",
			sources: []model.IntentionSource{allow("order")},
			allowed: []call{grpcCall("order", lookup), {from: "order", dc: "dc2", path: "/", method: "GET"}},
			denied:  []call{grpcCall("auth", lookup), grpcCall("", lookup), grpcCall("orderx", lookup)},
		},
		{
			name:    "a deny for a named source wins over an allow for *",
			sources: []model.IntentionSource{deny("notification"), allow("*")},
			allowed: []call{grpcCall("order", lookup), grpcCall("auth", del)},
			denied:  []call{grpcCall("notification", lookup), grpcCall("", lookup)},
		},
		{
			name:    "a named source is decided by its own permissions only, not by *",
			sources: []model.IntentionSource{{Name: "order", Permissions: []model.IntentionPermission{perm(model.IntentionAllow, model.HTTPMatch{PathExact: lookup})}}, allow("*")},
			allowed: []call{grpcCall("order", lookup), grpcCall("auth", del)},
			denied:  []call{grpcCall("order", del)},
		},
		{
			name: "permissions are first-match: an earlier deny carves out of a later allow",
			sources: []model.IntentionSource{{Name: "order", Permissions: []model.IntentionPermission{
				perm(model.IntentionDeny, model.HTTPMatch{PathExact: del}),
				perm(model.IntentionAllow, model.HTTPMatch{PathPrefix: "/meshop.user.v1.Users/"}),
			}}},
			allowed: []call{grpcCall("order", lookup)},
			denied:  []call{grpcCall("order", del), grpcCall("order", "/meshop.auth.v1.Keys/GetKeySet")},
		},
		{
			name: "an earlier allow is not undone by a later deny",
			sources: []model.IntentionSource{{Name: "order", Permissions: []model.IntentionPermission{
				perm(model.IntentionAllow, model.HTTPMatch{PathExact: lookup}),
				perm(model.IntentionDeny, model.HTTPMatch{PathPrefix: "/"}),
				perm(model.IntentionAllow, model.HTTPMatch{PathPrefix: "/"}),
			}}},
			allowed: []call{grpcCall("order", lookup)},
			denied:  []call{grpcCall("order", del)},
		},
		{
			name: "methods, regex paths and headers all must match",
			sources: []model.IntentionSource{{Name: "edge", Permissions: []model.IntentionPermission{
				perm(model.IntentionAllow, model.HTTPMatch{PathRegex: "/orders/[0-9]+", Methods: []string{"GET", "HEAD"},
					Headers: []model.HeaderMatch{{Name: "x-tenant", Prefix: "shop-", IgnoreCase: true}, {Name: "x-debug", Present: true, Invert: true}}}),
			}}},
			allowed: []call{{from: "edge", path: "/orders/12", method: "GET", headers: map[string]string{"x-tenant": "SHOP-1"}}},
			denied: []call{
				{from: "edge", path: "/orders/12", method: "POST", headers: map[string]string{"x-tenant": "shop-1"}},
				{from: "edge", path: "/orders/x", method: "GET", headers: map[string]string{"x-tenant": "shop-1"}},
				{from: "edge", path: "/orders/12", method: "GET"},
				{from: "edge", path: "/orders/12", method: "GET", headers: map[string]string{"x-tenant": "shop-1", "x-debug": "1"}},
			},
		},
		{
			name:    "a source whose permissions allow nothing is denied, also for *",
			sources: []model.IntentionSource{{Name: "order", Permissions: []model.IntentionPermission{perm(model.IntentionDeny, model.HTTPMatch{PathPrefix: "/"})}}, allow("*")},
			allowed: []call{grpcCall("auth", lookup)},
			denied:  []call{grpcCall("order", lookup)},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rules := rbacRules(testTrustDomain, tc.sources)
			for _, c := range tc.allowed {
				if !allows(t, rules, c) {
					t.Errorf("denied %+v, want allowed", c)
				}
			}
			for _, c := range tc.denied {
				if allows(t, rules, c) {
					t.Errorf("allowed %+v, want denied", c)
				}
			}
		})
	}
}

func allows(t *testing.T, rules *rbacv3.RBAC, c call) bool {
	if rules.GetAction() != rbacv3.RBAC_ALLOW {
		t.Fatalf("action %v, want ALLOW", rules.GetAction())
	}
	for _, p := range rules.GetPolicies() {
		idMatch, permMatch := false, false
		for _, id := range p.GetPrincipals() {
			idMatch = idMatch || principalMatches(t, id, c)
		}
		for _, pm := range p.GetPermissions() {
			permMatch = permMatch || permissionMatches(t, pm, c)
		}
		if idMatch && permMatch {
			return true
		}
	}
	return false
}

func principalMatches(t *testing.T, p *rbacv3.Principal, c call) bool {
	switch id := p.GetIdentifier().(type) {
	case *rbacv3.Principal_Authenticated_:
		return c.uri() != "" && stringMatches(t, id.Authenticated.GetPrincipalName(), c.uri())
	case *rbacv3.Principal_AndIds:
		for _, x := range id.AndIds.GetIds() {
			if !principalMatches(t, x, c) {
				return false
			}
		}
		return true
	case *rbacv3.Principal_NotId:
		return !principalMatches(t, id.NotId, c)
	}
	t.Fatalf("principal %T not evaluated here", p.GetIdentifier())
	return false
}

func permissionMatches(t *testing.T, p *rbacv3.Permission, c call) bool {
	switch r := p.GetRule().(type) {
	case *rbacv3.Permission_Any:
		return r.Any
	case *rbacv3.Permission_AndRules:
		for _, x := range r.AndRules.GetRules() {
			if !permissionMatches(t, x, c) {
				return false
			}
		}
		return true
	case *rbacv3.Permission_NotRule:
		return !permissionMatches(t, r.NotRule, c)
	case *rbacv3.Permission_UrlPath:
		return stringMatches(t, r.UrlPath.GetPath(), c.path)
	case *rbacv3.Permission_Header:
		return headerMatches(t, r.Header, c)
	}
	t.Fatalf("permission %T not evaluated here", p.GetRule())
	return false
}

func headerMatches(t *testing.T, h *routev3.HeaderMatcher, c call) bool {
	v, ok := c.header(h.GetName())
	var m bool
	switch spec := h.GetHeaderMatchSpecifier().(type) {
	case *routev3.HeaderMatcher_PresentMatch:
		m = ok == spec.PresentMatch
	case *routev3.HeaderMatcher_StringMatch:
		m = ok && stringMatches(t, spec.StringMatch, v)
	default:
		t.Fatalf("header matcher %T not evaluated here", spec)
	}
	return m != h.GetInvertMatch()
}

func stringMatches(t *testing.T, m *matcherv3.StringMatcher, v string) bool {
	fold := func(s string) string {
		if m.GetIgnoreCase() {
			return strings.ToLower(s)
		}
		return s
	}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		return fold(v) == fold(p.Exact)
	case *matcherv3.StringMatcher_Prefix:
		return strings.HasPrefix(fold(v), fold(p.Prefix))
	case *matcherv3.StringMatcher_Suffix:
		return strings.HasSuffix(fold(v), fold(p.Suffix))
	case *matcherv3.StringMatcher_Contains:
		return strings.Contains(fold(v), fold(p.Contains))
	case *matcherv3.StringMatcher_SafeRegex:
		// Envoy and gRPC match a safe_regex against the whole value.
		return regexp.MustCompile("^(?:" + p.SafeRegex.GetRegex() + ")$").MatchString(v)
	}
	t.Fatalf("string matcher %T not evaluated here", m.GetMatchPattern())
	return false
}

func TestSPIFFEPattern(t *testing.T) {
	re := regexp.MustCompile(SPIFFEPattern("a1.consul", "user"))
	for uri, want := range map[string]bool{
		"spiffe://a1.consul/ns/default/dc/dc1/svc/user":       true,
		"spiffe://a1.consul/ns/default/dc/east/svc/user":      true,
		"spiffe://a1.consul/ns/default/dc/dc1/svc/user-admin": false,
		"spiffe://a1xconsul/ns/default/dc/dc1/svc/user":       false, // the dot is literal
		"spiffe://a1.consul/ns/default/dc/dc1/svc/user/x":     false,
		"spiffe://other.consul/ns/default/dc/dc1/svc/user":    false,
	} {
		if got := re.MatchString(uri); got != want {
			t.Errorf("%s matches %s: %v, want %v", re, uri, got, want)
		}
	}
	if !regexp.MustCompile(SPIFFEPattern("a1.consul", "*")).MatchString("spiffe://a1.consul/ns/default/dc/dc1/svc/any") {
		t.Error("the * pattern does not match a service")
	}
}
