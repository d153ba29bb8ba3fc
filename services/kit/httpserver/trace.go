package httpserver

import (
	"context"
	"net/http"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"

	"github.com/meshop/meshop/services/kit/telemetry"
)

// tracedRoutes traces the app's routes, paying for otelhttp only on the
// requests whose span is recorded.
//
// It starts each request's server span itself, with otelhttp's tracer
// (same instrumentation scope, name and kind), so the sampler decides
// first. A span the sampler drops is a span context and nothing more: the
// request is served with it in its context (logs carry its trace_id, calls
// downstream carry the "not sampled" decision), and otelhttp's work for it
// (request and response attributes, wrapped body and writer, metric
// attributes) would all be thrown away, so it is skipped. A recorded span
// is handed to otelhttp, whose tracer adopts it (see adoptingTracer): it
// gets otelhttp's name, attributes and status and is ended by otelhttp,
// exactly as if otelhttp had started it.
//
// otelhttp's OpenTelemetry metrics are off (a no-op meter provider), as
// they were before in effect (no meter provider is installed in a Meshop
// process): the kit's request metrics are the instrument package's
// Prometheus metrics, recorded on every call.
type tracedRoutes struct {
	tracer     trace.Tracer
	propagator propagation.TextMapPropagator
	routes     http.Handler // the app's routes, unwrapped
	otelhttp   http.Handler // otelhttp around routes
}

// operation is the operation name otelhttp is given; the span name comes
// from spanName.
const operation = "http.server"

// newTracedRoutes traces routes with tel's tracer provider and propagator.
func newTracedRoutes(tel *telemetry.Telemetry, routes http.Handler) *tracedRoutes {
	t := &tracedRoutes{
		tracer:     tel.TracerProvider.Tracer(otelhttp.ScopeName, trace.WithInstrumentationVersion(otelhttp.Version)),
		propagator: tel.Propagator,
		routes:     routes,
	}
	t.otelhttp = otelhttp.NewHandler(routes, operation,
		otelhttp.WithTracerProvider(adoptingProvider{tracer: adoptingTracer{fallback: t.tracer}}),
		otelhttp.WithPropagators(tel.Propagator),
		otelhttp.WithMeterProvider(noop.NewMeterProvider()),
		otelhttp.WithSpanNameFormatter(spanName),
	)
	return t
}

// spanName names a server span after the ServeMux pattern the request
// matched. It is called before routing and, once the app's mux has set
// r.Pattern, again by otelhttp to rename the span.
func spanName(_ string, r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	if name, ok := unmatchedNames[r.Method]; ok {
		return name
	}
	return r.Method + " unmatched"
}

// unmatchedNames are the names of the spans of requests not yet routed,
// made once for the standard methods: every request's span starts with
// one.
var unmatchedNames = func() map[string]string {
	names := make(map[string]string)
	for _, method := range []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace} {
		names[method] = method + " unmatched"
	}
	return names
}()

// serverKind is the start option of every server span, made once (making
// it allocates).
var serverKind = trace.WithSpanKind(trace.SpanKindServer)

// ServeHTTP starts r's server span, joined to the caller's trace if r
// carries one, and serves r with it: directly when the span is dropped,
// through otelhttp when it is recorded.
func (t *tracedRoutes) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := t.propagator.Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	ctx, span := t.tracer.Start(ctx, spanName(operation, r), serverKind)
	if !span.IsRecording() {
		// Dropped: ending a span that is not recorded does nothing.
		t.routes.ServeHTTP(w, r.WithContext(ctx))
		return
	}
	t.otelhttp.ServeHTTP(w, r.WithContext(context.WithValue(ctx, startedSpanKey{}, span)))
}

// startedSpanKey is the context key of the recorded span tracedRoutes
// started for a request, for otelhttp's tracer to adopt.
type startedSpanKey struct{}

// adoptingProvider is the tracer provider otelhttp is given. otelhttp asks
// it for one tracer, when the handler is built.
type adoptingProvider struct {
	embedded.TracerProvider
	tracer adoptingTracer
}

// Tracer returns the adopting tracer, whatever the name and options
// (otelhttp's own).
func (p adoptingProvider) Tracer(string, ...trace.TracerOption) trace.Tracer { return p.tracer }

// adoptingTracer is otelhttp's tracer. Its Start continues the span that
// tracedRoutes started for the request, renamed and given the attributes
// and links of the start options, instead of starting a second one; the
// span already has the server kind. Without a started span in the context
// it starts one with fallback.
type adoptingTracer struct {
	embedded.Tracer
	fallback trace.Tracer
}

// Start adopts the span tracedRoutes started for the request in ctx.
func (t adoptingTracer) Start(ctx context.Context, name string, opts ...trace.SpanStartOption) (context.Context, trace.Span) {
	span, ok := ctx.Value(startedSpanKey{}).(trace.Span)
	if !ok {
		return t.fallback.Start(ctx, name, opts...)
	}
	cfg := trace.NewSpanStartConfig(opts...)
	span.SetName(name)
	span.SetAttributes(cfg.Attributes()...)
	for _, link := range cfg.Links() {
		span.AddLink(link)
	}
	// The key stays in the context the app is served with: only this
	// tracer reads it, and otelhttp starts one span a request with it.
	return trace.ContextWithSpan(ctx, span), span
}
