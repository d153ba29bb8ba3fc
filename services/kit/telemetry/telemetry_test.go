package telemetry

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
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
