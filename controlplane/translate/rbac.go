package translate

import (
	"strings"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"

	"github.com/meshop/meshop/controlplane/model"
)

// The authorization of a service's inbound side: its intentions become
// one RBAC filter (envoy.filters.http.rbac, before the router), the same
// for Envoy's inbound listener and a gRPC server's, with default deny:
//
//	intentions (precedence order)        RBAC, action ALLOW
//	  order:  allow                  ─▶  policy intention/order: principal order, any request
//	  auth:   deny                   ─▶  (none: nothing allows auth)
//	  user:   deny  GET /a, allow /  ─▶  policy intention/user: principal user,
//	                                       permission "/" AND NOT "GET /a"
//	  *:      allow                  ─▶  policy intention/*: principal any service
//	                                       AND NOT order AND NOT auth AND NOT user
//
// A principal is the caller's certificate (authenticated.principal_name,
// its URI SAN) matching the SPIFFE pattern of the source. "*" leaves out
// every source named before it, so a named source is decided by its own
// intention only: a deny for it wins over an allow for "*". Permissions
// are first-match: permission i allows what it matches and no earlier
// deny permission does. No intentions, no policy: every call is denied.
// A gRPC method is the path /<package.Service>/<Method>.

// rbacFilter is the RBAC filter enforcing sources (model.EffectiveSources
// of the service) for callers in trustDomain.
func rbacFilter(trustDomain string, sources []model.IntentionSource) *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.rbac",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&rbachttpv3.RBAC{Rules: rbacRules(trustDomain, sources)})},
	}
}

// rbacRules are the ALLOW policies of sources; sources that allow
// nothing have none.
func rbacRules(trustDomain string, sources []model.IntentionSource) *rbacv3.RBAC {
	rules := &rbacv3.RBAC{Action: rbacv3.RBAC_ALLOW, Policies: map[string]*rbacv3.Policy{}}
	var named []*rbacv3.Principal // the exact sources so far
	for _, s := range sources {
		p := principal(trustDomain, s.Name)
		if s.Name == model.Wildcard {
			p = andIDs(append([]*rbacv3.Principal{p}, notIDs(named)...))
		} else {
			named = append(named, p)
		}
		if perms := permissions(s); len(perms) > 0 {
			rules.Policies["intention/"+s.Name] = &rbacv3.Policy{Principals: []*rbacv3.Principal{p}, Permissions: perms}
		}
	}
	return rules
}

// principal matches callers whose certificate is a leaf of service.
func principal(trustDomain, service string) *rbacv3.Principal {
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_Authenticated_{Authenticated: &rbacv3.Principal_Authenticated{
		PrincipalName: safeRegex(SPIFFEPattern(trustDomain, service)),
	}}}
}

func notIDs(ps []*rbacv3.Principal) []*rbacv3.Principal {
	out := make([]*rbacv3.Principal, len(ps))
	for i, p := range ps {
		out[i] = &rbacv3.Principal{Identifier: &rbacv3.Principal_NotId{NotId: p}}
	}
	return out
}

func andIDs(ps []*rbacv3.Principal) *rbacv3.Principal {
	if len(ps) == 1 {
		return ps[0]
	}
	return &rbacv3.Principal{Identifier: &rbacv3.Principal_AndIds{AndIds: &rbacv3.Principal_Set{Ids: ps}}}
}

// permissions are what a source is allowed (any of them), in first-match
// order: each allow permission minus the deny permissions before it.
func permissions(s model.IntentionSource) []*rbacv3.Permission {
	if len(s.Permissions) == 0 {
		if s.Action == model.IntentionAllow {
			return []*rbacv3.Permission{anyRequest()}
		}
		return nil
	}
	var out, denied []*rbacv3.Permission
	for _, p := range s.Permissions {
		m := httpMatch(p.HTTP)
		if p.Action == model.IntentionDeny {
			denied = append(denied, &rbacv3.Permission{Rule: &rbacv3.Permission_NotRule{NotRule: m}})
			continue
		}
		out = append(out, andRules(append([]*rbacv3.Permission{m}, denied...)))
	}
	return out
}

func anyRequest() *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Any{Any: true}}
}

// andRules is the conjunction of ps, nested conjunctions flattened.
func andRules(ps []*rbacv3.Permission) *rbacv3.Permission {
	var flat []*rbacv3.Permission
	for _, p := range ps {
		if and := p.GetAndRules(); and != nil {
			flat = append(flat, and.GetRules()...)
		} else {
			flat = append(flat, p)
		}
	}
	ps = flat
	switch len(ps) {
	case 0:
		return anyRequest()
	case 1:
		return ps[0]
	}
	return &rbacv3.Permission{Rule: &rbacv3.Permission_AndRules{AndRules: &rbacv3.Permission_Set{Rules: ps}}}
}

// httpMatch is a permission matching requests that match m: its path,
// one of its methods and every header matcher.
func httpMatch(m model.HTTPMatch) *rbacv3.Permission {
	var parts []*rbacv3.Permission
	path := func(sm *matcherv3.StringMatcher) {
		parts = append(parts, &rbacv3.Permission{Rule: &rbacv3.Permission_UrlPath{UrlPath: &matcherv3.PathMatcher{
			Rule: &matcherv3.PathMatcher_Path{Path: sm},
		}}})
	}
	switch {
	case m.PathExact != "":
		path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: m.PathExact}})
	case m.PathPrefix != "":
		path(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: m.PathPrefix}})
	case m.PathRegex != "":
		path(safeRegex(m.PathRegex))
	}
	if len(m.Methods) > 0 {
		parts = append(parts, headerRule(&routev3.HeaderMatcher{
			Name:                 ":method",
			HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: safeRegex("^(" + strings.Join(m.Methods, "|") + ")$")},
		}))
	}
	for _, h := range m.Headers {
		parts = append(parts, headerRule(headerMatcher(h)))
	}
	return andRules(parts)
}

func headerRule(h *routev3.HeaderMatcher) *rbacv3.Permission {
	return &rbacv3.Permission{Rule: &rbacv3.Permission_Header{Header: h}}
}

// headerMatcher matches one header the way Consul's intention says, as
// a string matcher (which carries ignore_case) or a presence check.
func headerMatcher(h model.HeaderMatch) *routev3.HeaderMatcher {
	out := &routev3.HeaderMatcher{Name: h.Name, InvertMatch: h.Invert}
	sm := &matcherv3.StringMatcher{IgnoreCase: h.IgnoreCase}
	switch {
	case h.Present:
		out.HeaderMatchSpecifier = &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}
		return out
	case h.Exact != "":
		sm.MatchPattern = &matcherv3.StringMatcher_Exact{Exact: h.Exact}
	case h.Prefix != "":
		sm.MatchPattern = &matcherv3.StringMatcher_Prefix{Prefix: h.Prefix}
	case h.Suffix != "":
		sm.MatchPattern = &matcherv3.StringMatcher_Suffix{Suffix: h.Suffix}
	case h.Contains != "":
		sm.MatchPattern = &matcherv3.StringMatcher_Contains{Contains: h.Contains}
	default:
		sm = safeRegex(h.Regex)
	}
	out.HeaderMatchSpecifier = &routev3.HeaderMatcher_StringMatch{StringMatch: sm}
	return out
}
