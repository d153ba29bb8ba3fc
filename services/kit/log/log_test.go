package log

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestTraceIDsOnRecords(t *testing.T) {
	var buf bytes.Buffer
	l := New(&buf, "order", 0)
	sc := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: trace.TraceID{1, 2, 3}, SpanID: trace.SpanID{4, 5, 6}, TraceFlags: trace.FlagsSampled,
	})
	l.InfoContext(trace.ContextWithSpanContext(context.Background(), sc), "hello", "component", "test")

	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	want := map[string]any{
		"svc": "order", "msg": "hello", "component": "test",
		"trace_id": sc.TraceID().String(), "span_id": sc.SpanID().String(),
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v", k, got[k], v)
		}
	}
}

func TestNoTraceIDsWithoutSpan(t *testing.T) {
	var buf bytes.Buffer
	New(&buf, "user", 0).Info("plain")
	if bytes.Contains(buf.Bytes(), []byte("trace_id")) {
		t.Errorf("trace_id without a span: %s", buf.String())
	}
}

func TestGoKitAdapter(t *testing.T) {
	var buf bytes.Buffer
	_ = GoKit(New(&buf, "order", 0)).Log("msg", "instancer update", "service", "user", "instances", 2)
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("not JSON: %q", buf.String())
	}
	if got["msg"] != "instancer update" || got["service"] != "user" || got["instances"] != float64(2) {
		t.Errorf("got %v", got)
	}
}
