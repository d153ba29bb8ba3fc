package translate

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshop/meshop/controlplane/model"
)

// Retry conditions. Connect failures and refused streams never reached the
// app, so every method may retry them. Resets and 503s may have reached it:
// only idempotent requests retry those.
const (
	retryOnAny        = "connect-failure,refused-stream"
	retryOnIdempotent = "connect-failure,refused-stream,reset,retriable-status-codes"
	// idempotentMethods per RFC 9110 §9.2.2 (TRACE is left out: apps do
	// not serve it).
	idempotentMethods = "^(GET|HEAD|OPTIONS|PUT|DELETE)$"
	// idempotencyKeyHeader marks a request the app deduplicates (POST
	// /orders carries it), so it is as safe to retry as a PUT.
	idempotencyKeyHeader = "idempotency-key"
)

func wrapBool(b bool) *wrapperspb.BoolValue { return wrapperspb.Bool(b) }

// inboundRoute sends everything to the local app, bounded by the
// service's own timeout; with grpc, calls whose content-type is
// application/grpc go to its gRPC port. No retries here: the caller's
// sidecar retries, and retrying in two places multiplies attempts.
func inboundRoute(policy model.Policy, grpc bool) *routev3.RouteConfiguration {
	to := func(name, cluster string, match *routev3.RouteMatch) *routev3.Route {
		return &routev3.Route{
			Name:  name,
			Match: match,
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster},
				Timeout:          durationpb.New(policy.Timeout),
			}},
		}
	}
	var routes []*routev3.Route
	if grpc {
		m := prefixMatch("/")
		m.Grpc = &routev3.RouteMatch_GrpcRouteMatchOptions{} // content-type application/grpc*
		routes = append(routes, to("local_app_grpc", ClusterLocalAppGRPC, m))
	}
	routes = append(routes, to("local_app", ClusterLocalApp, prefixMatch("/")))
	return &routev3.RouteConfiguration{
		Name: RouteInbound,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    ClusterLocalApp,
			Domains: []string{"*"},
			Routes:  routes,
		}},
		ValidateClusters: wrapBool(false),
	}
}

// upstreamVirtualHost is the outbound virtual host of a service in its
// callers' route configurations: it routes Host <name> or <name>:<port>
// to the service with its policy. It is built with each caller's
// configuration, not kept with the service: most services have no
// connected caller.
func upstreamVirtualHost(service string, policy model.Policy) *routev3.VirtualHost {
	return &routev3.VirtualHost{
		Name:    service,
		Domains: []string{service, service + ":*"},
		Routes:  routesTo(service, policy, "", func() *routev3.RouteMatch { return prefixMatch("/") }, false),
	}
}

// exposeRoute serves the expose listener: GET /health, /ready and
// /metrics go to the app; anything else is a JSON 404.
func exposeRoute() *routev3.RouteConfiguration {
	var routes []*routev3.Route
	for _, path := range []string{"/health", "/ready", "/metrics"} {
		routes = append(routes, &routev3.Route{
			Name: strings.TrimPrefix(path, "/"),
			Match: &routev3.RouteMatch{
				PathSpecifier: &routev3.RouteMatch_Path{Path: path},
				Headers: []*routev3.HeaderMatcher{{Name: ":method", HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{
					StringMatch: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "GET"}}}}},
			},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: ClusterLocalApp},
				Timeout:          durationpb.New(5 * time.Second),
			}},
		})
	}
	routes = append(routes, notFoundRoute("not_exposed", prefixMatch("/"), "not_exposed",
		"the expose port answers GET /health, /ready and /metrics only; the service is on the inbound port, with a mesh certificate"))
	return &routev3.RouteConfiguration{
		Name:         RouteExpose,
		VirtualHosts: []*routev3.VirtualHost{{Name: "expose", Domains: []string{"*"}, Routes: routes}},
	}
}

// undeclaredVirtualHost answers any other Host with a 404 that says why,
// instead of Envoy's empty 404: the usual cause is a missing entry in
// mesh_upstreams.
func undeclaredVirtualHost(self string) *routev3.VirtualHost {
	msg := fmt.Sprintf("this host is not a declared upstream of %s; add it to the mesh_upstreams meta of %s", self, self)
	return &routev3.VirtualHost{
		Name:    "undeclared",
		Domains: []string{"*"},
		Routes:  []*routev3.Route{notFoundRoute("undeclared_upstream", prefixMatch("/"), "undeclared_upstream", msg)},
	}
}

// edgeRoute maps /api/<prefix> to the owner of <prefix>, stripping /api;
// anything else is a JSON 404 from Envoy.
func edgeRoute(in *EdgeInputs) *routev3.RouteConfiguration {
	policies := make(map[string]model.Policy, len(in.Upstreams))
	for _, u := range in.Upstreams {
		policies[u.Name] = u.config.Policy
	}
	var routes []*routev3.Route
	for _, pr := range in.Routes { // longest prefix first
		path := "/api" + pr.Prefix
		routes = append(routes, routesTo(pr.Service, policies[pr.Service], pr.Prefix, func() *routev3.RouteMatch {
			// Matches /api/orders, /api/orders/1 and /api/orders?x, not
			// /api/ordersx.
			return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: path}}
		}, true)...)
	}
	routes = append(routes, notFoundRoute("not_found", prefixMatch("/"), "not_found", "no service serves this path"))
	return &routev3.RouteConfiguration{
		Name: RouteEdge,
		VirtualHosts: []*routev3.VirtualHost{{
			Name:    "edge",
			Domains: []string{"*"},
			Routes:  routes,
			TypedPerFilterConfig: map[string]*anypb.Any{
				"envoy.filters.http.cors": mustAny(corsPolicy(in.CORSOrigins)),
			},
		}},
		ValidateClusters: wrapBool(false),
	}
}

// routesTo is the route set for calls to a service: requests that are safe to
// retry fully (idempotent method, or an Idempotency-Key) first, then
// everything else with connect-level retries only. stripAPI removes the
// edge's /api prefix.
func routesTo(service string, policy model.Policy, label string, match func() *routev3.RouteMatch, stripAPI bool) []*routev3.Route {
	name := service
	if label != "" {
		name += label
	}
	withKey := match()
	withKey.Headers = []*routev3.HeaderMatcher{{
		Name:                 idempotencyKeyHeader,
		HeaderMatchSpecifier: &routev3.HeaderMatcher_PresentMatch{PresentMatch: true},
	}}
	idempotent := match()
	idempotent.Headers = []*routev3.HeaderMatcher{{
		Name: ":method",
		HeaderMatchSpecifier: &routev3.HeaderMatcher_StringMatch{StringMatch: &matcherv3.StringMatcher{
			MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: idempotentMethods}},
		}},
	}}
	return []*routev3.Route{
		{Name: name + "#idempotency_key", Match: withKey, Action: &routev3.Route_Route{Route: routeAction(service, policy, retryOnIdempotent, stripAPI)}},
		{Name: name + "#idempotent", Match: idempotent, Action: &routev3.Route_Route{Route: routeAction(service, policy, retryOnIdempotent, stripAPI)}},
		{Name: name + "#other", Match: match(), Action: &routev3.Route_Route{Route: routeAction(service, policy, retryOnAny, stripAPI)}},
	}
}

func routeAction(service string, p model.Policy, retryOn string, stripAPI bool) *routev3.RouteAction {
	a := &routev3.RouteAction{Timeout: durationpb.New(p.Timeout)}
	if len(p.Split) == 0 {
		a.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: UpstreamCluster(service)}
	} else {
		wc := &routev3.WeightedCluster{}
		for _, s := range p.Split {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name:   VersionCluster(service, s.Version),
				Weight: wrapperspb.UInt32(s.Weight),
			})
		}
		a.ClusterSpecifier = &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}
	}
	if p.Retries.Attempts > 0 {
		a.RetryPolicy = retryPolicy(p.Retries, retryOn)
	}
	if stripAPI {
		a.RegexRewrite = &matcherv3.RegexMatchAndSubstitute{
			Pattern:      &matcherv3.RegexMatcher{Regex: "^/api"},
			Substitution: "",
		}
	}
	return a
}

// retryPolicy retries on the conditions retryOn names and, for gRPC
// calls through the sidecar, on the policy's gRPC status names (Envoy
// reads them from grpc-status).
func retryPolicy(r model.Retries, retryOn string) *routev3.RetryPolicy {
	if len(r.GRPCOn) > 0 {
		retryOn += "," + strings.Join(r.GRPCOn, ",")
	}
	rp := &routev3.RetryPolicy{
		RetryOn:    retryOn,
		NumRetries: wrapperspb.UInt32(uint32(r.Attempts)),
		RetryBackOff: &routev3.RetryPolicy_RetryBackOff{
			BaseInterval: durationpb.New(r.BackoffBase),
			MaxInterval:  durationpb.New(r.BackoffMax),
		},
		// Try another instance than the one that just failed.
		RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       "envoy.retry_host_predicates.previous_hosts",
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})},
		}},
		HostSelectionRetryMaxAttempts: 3,
	}
	if strings.Contains(retryOn, "retriable-status-codes") {
		rp.RetriableStatusCodes = []uint32{503}
	}
	if r.PerTryTimeout > 0 {
		rp.PerTryTimeout = durationpb.New(r.PerTryTimeout)
	}
	return rp
}

func prefixMatch(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

// notFoundRoute answers 404 with the mesh's JSON error body.
func notFoundRoute(name string, match *routev3.RouteMatch, code, message string) *routev3.Route {
	body, _ := json.Marshal(map[string]any{"error": map[string]any{"code": code, "message": message}})
	return &routev3.Route{
		Name:  name,
		Match: match,
		Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 404,
			Body:   &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: string(body)}},
		}},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "content-type", Value: "application/json"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}
}

// corsPolicy lets browsers on the given origins call the API with bearer
// tokens in the Authorization header (not cookies, so no credentials).
func corsPolicy(origins []string) *corsv3.CorsPolicy {
	var match []*matcherv3.StringMatcher
	for _, o := range origins {
		if o == "*" {
			match = []*matcherv3.StringMatcher{{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: ".*"}}}}
			break
		}
		match = append(match, &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: o}})
	}
	return &corsv3.CorsPolicy{
		AllowOriginStringMatch: match,
		AllowMethods:           "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS",
		AllowHeaders:           "authorization, content-type, idempotency-key, traceparent, tracestate, x-request-id",
		ExposeHeaders:          "traceparent, x-request-id, x-local-rate-limit",
		MaxAge:                 fmt.Sprint(int((10 * time.Minute).Seconds())),
		AllowCredentials:       wrapBool(false),
	}
}
