package translate

import (
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	corsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/cors/v3"
	localratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type anyMsg = anypb.Any

// mustAny packs a message built by this package. Packing fails only for
// strings that are not UTF-8, and every string here is either a constant
// or a validated name; a failure is a bug, and serve recovers from it by
// not setting the snapshot.
//
// Packing is deterministic (map entries sorted, as in the access log's
// JSON format): equal resources encode to equal bytes, so their hashes,
// and the versions Envoy sees, change only when their content does.
func mustAny(m proto.Message) *anypb.Any {
	a := &anypb.Any{}
	if err := anypb.MarshalFrom(a, m, proto.MarshalOptions{Deterministic: true}); err != nil {
		panic("translate: pack " + string(proto.MessageName(m)) + ": " + err.Error())
	}
	return a
}

const (
	inboundDirection  = corev3.TrafficDirection_INBOUND
	outboundDirection = corev3.TrafficDirection_OUTBOUND
)

func listener(name, addr string, port uint32, dir corev3.TrafficDirection, m *hcmv3.HttpConnectionManager) *listenerv3.Listener {
	return &listenerv3.Listener{
		Name:             name,
		Address:          socketAddress(addr, port),
		TrafficDirection: dir,
		FilterChains: []*listenerv3.FilterChain{{
			Filters: []*listenerv3.Filter{{
				Name:       "envoy.filters.network.http_connection_manager",
				ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(m)},
			}},
		}},
	}
}

// routerFilter is the last HTTP filter of every connection manager, the
// one that routes.
func routerFilter() *hcmv3.HttpFilter {
	return &hcmv3.HttpFilter{
		Name:       "envoy.filters.http.router",
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})},
	}
}

// hcm is the HTTP connection manager every listener uses: routes from RDS
// over ADS, OpenTelemetry tracing, JSON access logs on stdout and JSON
// bodies for the errors Envoy itself generates. filters run before the
// router.
func hcm(statPrefix, routeName, tracedAs string, filters []*hcmv3.HttpFilter) *hcmv3.HttpConnectionManager {
	filters = append(filters, routerFilter())
	return &hcmv3.HttpConnectionManager{
		StatPrefix: statPrefix,
		CodecType:  hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			ConfigSource:    adsSource(),
			RouteConfigName: routeName,
		}},
		HttpFilters:      filters,
		Tracing:          tracing(tracedAs),
		AccessLog:        []*accesslogv3.AccessLog{accessLog(tracedAs, statPrefix)},
		LocalReplyConfig: localReplyConfig(),
		NormalizePath:    wrapperspb.Bool(true),
		MergeSlashes:     true,
		// The edge is the trust boundary: it sets X-Forwarded-For and
		// X-Envoy-External-Address from the peer; sidecars keep what the
		// caller's Envoy set.
		UseRemoteAddress: wrapperspb.Bool(statPrefix == ListenerEdge),
		// Envoy's own request ID becomes the trace's companion in logs.
		GenerateRequestId: wrapperspb.Bool(true),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{
			IdleTimeout: durationpb.New(5 * time.Minute),
		},
	}
}

// tracing sends every sampled request's span to the collector with the
// OpenTelemetry tracer. Envoy continues an incoming traceparent (so its
// spans join the app's trace) and starts a trace otherwise.
func tracing(serviceName string) *hcmv3.HttpConnectionManager_Tracing {
	otel := &tracev3.OpenTelemetryConfig{
		GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: ClusterCollector}},
			Timeout:         durationpb.New(250 * time.Millisecond),
		},
		ServiceName: serviceName,
	}
	return &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling: &typev3.Percent{Value: 100},
		Provider: &tracev3.Tracing_Http{
			Name:       "envoy.tracers.opentelemetry",
			ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: mustAny(otel)},
		},
	}
}

// accessLog writes one JSON line per request to stdout, with the keys the
// apps use (svc, component, trace_id) so one query finds both.
func accessLog(svc, listenerName string) *accesslogv3.AccessLog {
	fields := map[string]string{
		"time":             "%START_TIME%",
		"svc":              svc,
		"component":        "envoy",
		"listener":         listenerName,
		"method":           "%REQ(:METHOD)%",
		"path":             "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"authority":        "%REQ(:AUTHORITY)%",
		"status":           "%RESPONSE_CODE%",
		"flags":            "%RESPONSE_FLAGS%",
		"details":          "%RESPONSE_CODE_DETAILS%",
		"took_ms":          "%DURATION%",
		"bytes_in":         "%BYTES_RECEIVED%",
		"bytes_out":        "%BYTES_SENT%",
		"upstream_cluster": "%UPSTREAM_CLUSTER%",
		"upstream_host":    "%UPSTREAM_HOST%",
		"request_id":       "%REQ(X-REQUEST-ID)%",
		"trace_id":         "%TRACE_ID%",
		"traceparent":      "%REQ(TRACEPARENT)%",
	}
	st := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for k, v := range fields {
		st.Fields[k] = structpb.NewStringValue(v)
	}
	cfg := &streamv3.StdoutAccessLog{AccessLogFormat: &streamv3.StdoutAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
		Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st},
	}}}
	return &accesslogv3.AccessLog{
		Name:       "envoy.access_loggers.stdout",
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: mustAny(cfg)},
	}
}

// localReplyConfig rewrites the bodies of errors Envoy generates itself
// (429 from the rate limit, 503 no healthy upstream, 504 timeouts: every
// status from 429 up) into the mesh's JSON error shape. Direct responses
// below 429 (the edge's 404) keep the JSON body the route sets.
func localReplyConfig() *hcmv3.LocalReplyConfig {
	return &hcmv3.LocalReplyConfig{Mappers: []*hcmv3.ResponseMapper{{
		Filter: &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_StatusCodeFilter{
			StatusCodeFilter: &accesslogv3.StatusCodeFilter{Comparison: &accesslogv3.ComparisonFilter{
				Op:    accesslogv3.ComparisonFilter_GE,
				Value: &corev3.RuntimeUInt32{DefaultValue: 429, RuntimeKey: "meshop.local_reply.json_from_status"},
			}},
		}},
		BodyFormatOverride: jsonErrorBody("%RESPONSE_CODE_DETAILS%"),
	}}}
}

// jsonErrorBody is the mesh's JSON error shape for a reply Envoy makes
// itself, with code (a command operator or a fixed code) and Envoy's
// reason as the message.
func jsonErrorBody(code string) *corev3.SubstitutionFormatString {
	body := &structpb.Struct{Fields: map[string]*structpb.Value{
		"error": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
			"code":    structpb.NewStringValue(code),
			"message": structpb.NewStringValue("%LOCAL_REPLY_BODY%"),
			"details": structpb.NewStructValue(&structpb.Struct{Fields: map[string]*structpb.Value{
				"status":     structpb.NewStringValue("%RESPONSE_CODE%"),
				"flags":      structpb.NewStringValue("%RESPONSE_FLAGS%"),
				"request_id": structpb.NewStringValue("%REQ(X-REQUEST-ID)%"),
			}}),
		}}),
	}}
	return &corev3.SubstitutionFormatString{
		Format:      &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: body},
		ContentType: "application/json",
	}
}

// edgeFilters run on the edge before the router: CORS (policy on the
// virtual host), the local rate limit and, with checkTokens, jwt_authn
// (after the rate limit, which thus also bounds the signature checks).
func edgeFilters(limit RateLimit, checkTokens bool) []*hcmv3.HttpFilter {
	rl := &localratelimitv3.LocalRateLimit{
		StatPrefix: "edge_rate_limit",
		TokenBucket: &typev3.TokenBucket{
			MaxTokens:     limit.Burst,
			TokensPerFill: wrapperspb.UInt32(limit.PerFill),
			FillInterval:  durationpb.New(limit.Interval),
		},
		FilterEnabled: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
			RuntimeKey:   "edge_rate_limit_enabled",
		},
		FilterEnforced: &corev3.RuntimeFractionalPercent{
			DefaultValue: &typev3.FractionalPercent{Numerator: 100, Denominator: typev3.FractionalPercent_HUNDRED},
			RuntimeKey:   "edge_rate_limit_enforced",
		},
		ResponseHeadersToAdd: []*corev3.HeaderValueOption{{
			Header:       &corev3.HeaderValue{Key: "x-local-rate-limit", Value: "true"},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		}},
	}
	filters := []*hcmv3.HttpFilter{
		{Name: "envoy.filters.http.cors", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&corsv3.Cors{})}},
		{Name: "envoy.filters.http.local_ratelimit", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(rl)}},
	}
	if checkTokens {
		filters = append(filters, jwtAuthnFilter())
	}
	return filters
}
