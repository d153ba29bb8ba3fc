package telemetry

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestSpansReachTheExporter(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := New(context.Background(), Config{Service: "order", Version: "v1", SampleRate: 1, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tel.Tracer("test").Start(context.Background(), "work")
	span.End()
	if err := tel.TracerProvider.ForceFlush(context.Background()); err != nil {
		t.Fatal(err)
	}
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].Name != "work" {
		t.Fatalf("exported %v", spans)
	}
	if got := spans[0].Resource.Attributes(); !hasAttr(got, "service.name", "order") {
		t.Errorf("resource lacks service.name=order: %v", got)
	}
}

func TestParentDecisionWinsOverRatio(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tel, err := New(context.Background(), Config{Service: "user", SampleRate: 0, Exporter: exp})
	if err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	ctx := tel.Propagator.Extract(context.Background(), propagation.HeaderCarrier(h))
	_, span := tel.Tracer("test").Start(ctx, "child")
	span.End()
	_, unsampled := tel.Tracer("test").Start(context.Background(), "root")
	unsampled.End()
	_ = tel.TracerProvider.ForceFlush(context.Background())
	spans := exp.GetSpans()
	if len(spans) != 1 || spans[0].SpanContext.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Fatalf("want only the child of the sampled parent, got %v", spans)
	}
}

func TestBadEndpoint(t *testing.T) {
	for _, ep := range []string{"localhost:4317", "ftp://x:1", "http://"} {
		if _, err := New(context.Background(), Config{Service: "x", Endpoint: ep}); err == nil {
			t.Errorf("endpoint %q accepted", ep)
		}
	}
}

func hasAttr(attrs []attribute.KeyValue, key, value string) bool {
	for _, kv := range attrs {
		if string(kv.Key) == key && kv.Value.AsString() == value {
			return true
		}
	}
	return false
}

// TestPropagatorExtractsLikeW3C compares the propagator with plain W3C
// TraceContext + Baggage on headers with and without trace context.
func TestPropagatorExtractsLikeW3C(t *testing.T) {
	tel, err := New(context.Background(), Config{Service: "order"})
	if err != nil {
		t.Fatal(err)
	}
	w3c := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for name, h := range map[string]http.Header{
		"none":                 {"Content-Type": {"application/json"}},
		"traceparent":          {"Traceparent": {parent}},
		"traceparent and more": {"Traceparent": {parent}, "Tracestate": {"k=v"}, "Baggage": {"user=42"}},
		"baggage only":         {"Baggage": {"user=42,tier=gold"}},
		"not canonical":        {"traceparent": {parent}, "baggage": {"user=42"}},
		"empty values":         {"Traceparent": {""}, "Baggage": {""}},
	} {
		want := w3c.Extract(context.Background(), propagation.HeaderCarrier(h))
		got := tel.Propagator.Extract(context.Background(), propagation.HeaderCarrier(h))
		if !trace.SpanContextFromContext(got).Equal(trace.SpanContextFromContext(want)) ||
			!sameBaggage(baggage.FromContext(got), baggage.FromContext(want)) {
			t.Errorf("%s: extracted %v %q, want %v %q", name, trace.SpanContextFromContext(got), baggage.FromContext(got),
				trace.SpanContextFromContext(want), baggage.FromContext(want))
		}
	}
	// The same through a carrier that is not HTTP headers.
	m := propagation.MapCarrier{"traceparent": parent, "baggage": "user=42"}
	got := tel.Propagator.Extract(context.Background(), m)
	if trace.SpanContextFromContext(got).TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || baggage.FromContext(got).Member("user").Value() != "42" {
		t.Errorf("map carrier: extracted %v %q", trace.SpanContextFromContext(got), baggage.FromContext(got))
	}
	out := propagation.MapCarrier{}
	tel.Propagator.Inject(got, out)
	if out["traceparent"] != parent || out["baggage"] != "user=42" {
		t.Errorf("injected %v", out)
	}
}

// sameBaggage compares members, not String(), whose order is a map's.
func sameBaggage(a, b baggage.Baggage) bool {
	if a.Len() != b.Len() {
		return false
	}
	for _, m := range a.Members() {
		if b.Member(m.Key()).Value() != m.Value() {
			return false
		}
	}
	return true
}
