package httpserver

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshop/meshop/services/kit/telemetry"
)

// tracedServer is a Server whose spans go to an in-memory exporter; its
// route POST /orders/{id} records the span context it was served with.
func tracedServer(t *testing.T, sampleRate float64) (http.Handler, *telemetry.Telemetry, *tracetest.InMemoryExporter, *trace.SpanContext) {
	t.Helper()
	exp := tracetest.NewInMemoryExporter()
	tel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: sampleRate, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	seen := new(trace.SpanContext)
	routes := http.NewServeMux()
	routes.HandleFunc("POST /orders/{id}", func(w http.ResponseWriter, r *http.Request) {
		*seen = trace.SpanContextFromContext(r.Context())
		createOrder(w, r)
	})
	h := New(Config{Service: "order", Routes: routes, Metrics: prometheus.NewRegistry(),
		Telemetry: tel, Logger: slog.New(slog.DiscardHandler)}).Handler()
	return h, tel, exp, seen
}

// createOrder reads the body and answers 201 with one.
func createOrder(w http.ResponseWriter, r *http.Request) {
	_, _ = io.Copy(io.Discard, r.Body)
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, `{"id":"42"}`)
}

// postOrder serves POST /orders/42 on h, from a fixed client address and
// user agent, with traceparent if it is not "".
func postOrder(h http.Handler, traceparent string) {
	r := httptest.NewRequest("POST", "/orders/42", strings.NewReader(`{"qty":1}`))
	r.RemoteAddr = "192.0.2.7:40000"
	r.Header.Set("User-Agent", "test")
	if traceparent != "" {
		r.Header.Set("traceparent", traceparent)
	}
	h.ServeHTTP(httptest.NewRecorder(), r)
}

// flush exports the spans tel has ended.
func flush(t *testing.T, tel *telemetry.Telemetry) {
	t.Helper()
	if err := tel.TracerProvider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestRecordedSpanIsOtelhttps checks that a sampled request's span is the
// one otelhttp makes on its own (same scope, kind, name, status and
// attributes), plus http.route, although the server started it before
// otelhttp ran.
func TestRecordedSpanIsOtelhttps(t *testing.T) {
	h, tel, exp, _ := tracedServer(t, 1)
	postOrder(h, "")
	flush(t, tel)

	// The same request through otelhttp alone, configured as the server
	// configures it.
	plainExp := tracetest.NewInMemoryExporter()
	plainTel, err := telemetry.New(context.Background(), telemetry.Config{Service: "order", SampleRate: 1, Exporter: plainExp})
	if err != nil {
		t.Fatal(err)
	}
	routes := http.NewServeMux()
	routes.HandleFunc("POST /orders/{id}", createOrder)
	postOrder(otelhttp.NewHandler(routes, operation, otelhttp.WithTracerProvider(plainTel.TracerProvider),
		otelhttp.WithPropagators(plainTel.Propagator), otelhttp.WithSpanNameFormatter(spanName)), "")
	flush(t, plainTel)

	got, want := exp.GetSpans(), plainExp.GetSpans()
	if len(got) != 1 || len(want) != 1 {
		t.Fatalf("spans: server %d, otelhttp alone %d; want 1 each", len(got), len(want))
	}
	g, w := got[0], want[0]
	if g.Name != w.Name || g.SpanKind != w.SpanKind || g.Status != w.Status || g.InstrumentationScope != w.InstrumentationScope {
		t.Errorf("span %q kind %v status %v scope %v; otelhttp alone: %q %v %v %v",
			g.Name, g.SpanKind, g.Status, g.InstrumentationScope, w.Name, w.SpanKind, w.Status, w.InstrumentationScope)
	}
	wantAttrs := attribute.NewSet(append(w.Attributes, attribute.String("http.route", "/orders/{id}"))...)
	if gotAttrs := attribute.NewSet(g.Attributes...); !gotAttrs.Equals(&wantAttrs) {
		t.Errorf("attributes\n %v\nwant\n %v", gotAttrs.Encoded(attribute.DefaultEncoder()), wantAttrs.Encoded(attribute.DefaultEncoder()))
	}
	if !g.EndTime.After(g.StartTime) {
		t.Errorf("span not ended after it started: %v → %v", g.StartTime, g.EndTime)
	}
}

// TestDroppedSpanStillPropagates checks what a request whose span is not
// sampled is served with: a span context of its own in the caller's trace
// (or a new one), not sampled, and nothing exported.
func TestDroppedSpanStillPropagates(t *testing.T) {
	h, tel, exp, seen := tracedServer(t, 0)
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"

	postOrder(h, "00-"+traceID+"-"+parentID+"-00")
	if !seen.IsValid() || seen.TraceID().String() != traceID || seen.SpanID().String() == parentID || seen.IsSampled() {
		t.Errorf("unsampled caller: handler saw trace %s span %s sampled %v; want a new span in trace %s, not sampled",
			seen.TraceID(), seen.SpanID(), seen.IsSampled(), traceID)
	}

	*seen = trace.SpanContext{}
	postOrder(h, "")
	if !seen.IsValid() || seen.IsSampled() {
		t.Errorf("new trace: handler saw %v (valid %v, sampled %v); want a valid, unsampled span context", seen, seen.IsValid(), seen.IsSampled())
	}

	flush(t, tel)
	if spans := exp.GetSpans(); len(spans) != 0 {
		t.Errorf("exported %d spans of unsampled requests", len(spans))
	}

	postOrder(h, "00-"+traceID+"-"+parentID+"-01")
	flush(t, tel)
	if spans := exp.GetSpans(); len(spans) != 1 || spans[0].Parent.SpanID().String() != parentID || !seen.IsSampled() {
		t.Errorf("sampled caller: exported %d spans, handler's span sampled %v; want 1 child of %s", len(spans), seen.IsSampled(), parentID)
	}
}
