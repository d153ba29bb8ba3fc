package translate

import (
	"strconv"
	"strings"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	jwtv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/jwt_authn/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/durationpb"
)

// The edge is where the public meets the mesh (issue 11, "zero trust"):
//
//	client ──HTTPS (SDS secret edge_https, from a file)──▶ edge listener
//	   CORS ─▶ local rate limit ─▶ jwt_authn (provider meshop_auth) ─▶ router ─▶ svc_<owner>
//	                                  │ keys: GET http://auth/auth/jwks through svc_auth,
//	                                  │ fetched in the background every jwksRefresh
//	                                  └ 401 before any app when a request that needs a user
//	                                    has no token or a bad one
//
// jwt_authn checks that a token is genuine (auth's signature, issuer,
// audience, not expired) and forwards it unchanged: the apps verify it
// again and decide on roles and ownership.
const (
	// FilterJWTAuthn is the edge's token-checking HTTP filter.
	FilterJWTAuthn = "envoy.filters.http.jwt_authn"
	// JWTProvider is jwt_authn's one provider: auth's tokens.
	JWTProvider = "meshop_auth"
	// SecretEdgeHTTPS is the edge's HTTPS certificate and key: an SDS
	// secret that the edge Envoy reads from a file of its own
	// (Config.EdgeTLSFile; compose: deploy/tls/edge-https-sds.yaml), which
	// names the certificate and key files, so neither passes through the
	// control plane.
	SecretEdgeHTTPS = "edge_https"
	// DefaultEdgeTLSFile is where compose mounts that file in the edge
	// container.
	DefaultEdgeTLSFile = "/etc/meshop/tls/edge-https-sds.yaml"

	// AuthService publishes the keys that verify access tokens.
	AuthService = "auth"
	// AuthJWKSPath is auth's JWKS route (the edge serves it publicly at
	// /api/auth/jwks; jwt_authn asks auth itself, through svc_auth).
	AuthJWKSPath = "/auth/jwks"
	// AuthIssuer and AuthAudience are the iss and aud claims of auth's
	// tokens (services/kit/auth Issuer and Audience; auth's AUTH_ISSUER
	// and AUTH_AUDIENCE defaults).
	AuthIssuer   = "meshop-auth"
	AuthAudience = "meshop"
)

// jwksRefresh is how long the edge keeps auth's key set before fetching
// it again (in the background: requests never wait for it). It is below
// auth's AUTH_KEY_PUBLISH_DELAY (15s), the time a new signing key is
// published before it signs, so after a key rotation the edge knows the
// new key before the first token signed with it arrives. A fetch is one
// small GET per edge Envoy.
const jwksRefresh = 10 * time.Second

// tokenClockSkew is the leeway on exp and nbf, the apps' (kit/auth
// VerifierConfig.Leeway default).
const tokenClockSkew = 30

// openRoute is a request the edge lets through without a user's token.
// Paths are app paths, as services register them in
// mesh_public_prefixes; the edge serves them under /api.
type openRoute struct {
	Methods []string
	// Path is an exact path; Prefix a path-separated prefix (/products
	// matches /products and /products/1, not /productsx). One is set.
	Path, Prefix string
}

// openRoutes are the only requests under /api that reach an app without a
// valid bearer token from auth: what a visitor does before logging in.
// Every other request under /api needs one (any other method or path,
// and any prefix a service registers later: the default is closed), and
// the edge answers 401 when it is missing or bad.
//
//	POST      /api/auth/register, /api/auth/login   (no user yet)
//	GET, HEAD /api/auth/jwks                        (public keys)
//	GET, HEAD /api/products, /api/products/{id}     (the catalogue)
//	anything else under /api                        token required: /api/users/...,
//	                                                POST /api/products, /api/orders...,
//	                                                /api/payments/..., /api/notifications
//
// The edge checks that the token is genuine, not what it allows: POST
// /api/products needs role admin, which product checks. An open route
// still carries a token to the app when the client sends one, and the
// app verifies it (product answers 401 to a bad token on GET).
// CORS preflights pass to the CORS filter's answer whatever the path.
var openRoutes = []openRoute{
	{Methods: []string{"POST"}, Path: "/auth/register"},
	{Methods: []string{"POST"}, Path: "/auth/login"},
	{Methods: []string{"GET", "HEAD"}, Path: AuthJWKSPath},
	{Methods: []string{"GET", "HEAD"}, Prefix: "/products"},
}

// jwtAuthnFilter verifies auth's tokens at the edge on every request
// under /api but the openRoutes, first match wins. Tokens come from the
// Authorization header only ("Bearer <token>"), never the URL, and go on
// to the app unchanged (forward).
func jwtAuthnFilter() *hcmv3.HttpFilter {
	provider := &jwtv3.JwtProvider{
		Issuer:    AuthIssuer,
		Audiences: []string{AuthAudience},
		JwksSourceSpecifier: &jwtv3.JwtProvider_RemoteJwks{RemoteJwks: &jwtv3.RemoteJwks{
			HttpUri: &corev3.HttpUri{
				// Host and path of the request to auth's sidecar.
				Uri:              "http://" + AuthService + AuthJWKSPath,
				HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: UpstreamCluster(AuthService)},
				Timeout:          durationpb.New(time.Second),
			},
			CacheDuration: durationpb.New(jwksRefresh),
			// Fetched on the main thread and shared by the workers; the
			// listener does not wait for the first fetch (a failed one is
			// retried every second).
			AsyncFetch: &jwtv3.JwksAsyncFetch{FastListener: true},
		}},
		FromHeaders:       []*jwtv3.JwtHeader{{Name: "Authorization", ValuePrefix: "Bearer "}},
		Forward:           true,
		RequireExpiration: true,
		ClockSkewSeconds:  tokenClockSkew,
	}
	var rules []*jwtv3.RequirementRule
	for _, o := range openRoutes {
		m := &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Path{Path: "/api" + o.Path}}
		if o.Prefix != "" {
			m.PathSpecifier = &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api" + o.Prefix}
		}
		m.Headers = []*routev3.HeaderMatcher{methodMatcher(o.Methods)}
		rules = append(rules, &jwtv3.RequirementRule{Match: m}) // no requirement: not checked
	}
	rules = append(rules, &jwtv3.RequirementRule{
		Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/api"}},
		RequirementType: &jwtv3.RequirementRule_Requires{Requires: &jwtv3.JwtRequirement{
			RequiresType: &jwtv3.JwtRequirement_ProviderName{ProviderName: JWTProvider},
		}},
	})
	return &hcmv3.HttpFilter{
		Name: FilterJWTAuthn,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&jwtv3.JwtAuthentication{
			Providers:           map[string]*jwtv3.JwtProvider{JWTProvider: provider},
			Rules:               rules,
			BypassCorsPreflight: true,
		})},
	}
}

// methodMatcher matches the request methods given.
func methodMatcher(methods []string) *routev3.HeaderMatcher {
	sm := &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: methods[0]}}
	if len(methods) > 1 {
		sm = safeRegex("^(" + strings.Join(methods, "|") + ")$")
	}
	return &routev3.HeaderMatcher{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: sm}}
}

// tokenReplyMappers give jwt_authn's refusals (401; 403 for a token of
// another audience) the apps' JSON error shape and codes: invalid_token
// when the request carried an Authorization header, unauthenticated when
// it did not. Envoy's reason ("Jwt is missing", "Jwt is expired", "Jwt
// verification fails", ...) is the message, and jwt_authn's own
// WWW-Authenticate header stays. Only jwt_authn answers 401 or 403 at the
// edge itself; the apps' answers are no local replies and pass unchanged.
func tokenReplyMappers() []*hcmv3.ResponseMapper {
	refused := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_OrFilter{OrFilter: &accesslogv3.OrFilter{
		Filters: []*accesslogv3.AccessLogFilter{statusIs(401), statusIs(403)},
	}}}
	withToken := &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_AndFilter{AndFilter: &accesslogv3.AndFilter{
		Filters: []*accesslogv3.AccessLogFilter{refused, {FilterSpecifier: &accesslogv3.AccessLogFilter_HeaderFilter{HeaderFilter: &accesslogv3.HeaderFilter{
			Header: &routev3.HeaderMatcher{Name: "authorization", HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true}},
		}}}},
	}}}
	return []*hcmv3.ResponseMapper{
		{Filter: withToken, BodyFormatOverride: jsonErrorBody("invalid_token")},
		{Filter: refused, BodyFormatOverride: jsonErrorBody("unauthenticated")},
	}
}

func statusIs(code uint32) *accesslogv3.AccessLogFilter {
	return &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
		StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
			Op:    accesslogv3.ComparisonFilter_EQ,
			Value: &corev3.RuntimeUInt32{DefaultValue: code, RuntimeKey: "meshop.local_reply.token_refused_" + strconv.Itoa(int(code))},
		}},
	}}
}

// edgeHTTPS is the edge listener's TLS: the certificate of the secret
// SecretEdgeHTTPS, which Envoy reads from the SDS file sdsFile (a
// DiscoveryResponse; Envoy reloads it when a new file is moved to that
// path), HTTP/2 or HTTP/1.1 by ALPN, no client certificate.
func edgeHTTPS(sdsFile string) *corev3.TransportSocket {
	secret := &tlsv3.SdsSecretConfig{Name: SecretEdgeHTTPS, SdsConfig: &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{Path: sdsFile}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
	}}
	return transportSocket(&tlsv3.DownstreamTlsContext{CommonTlsContext: &tlsv3.CommonTlsContext{
		TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{secret},
		AlpnProtocols:                  []string{"h2", "http/1.1"},
	}})
}
