// Package telemetry sets up OpenTelemetry tracing for a Meshop process:
//
//	spans ──▶ parent-based ratio sampler ──▶ batch ──▶ OTLP gRPC ──▶ collector
//	                                                   (off when no endpoint)
//
// Propagation is W3C TraceContext + Baggage, so Envoy's spans and every
// service's spans join one trace. The provider and propagator are returned,
// not installed globally: servers and clients take them explicitly, which
// keeps several services in one test process apart.
package telemetry

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Config says who is tracing and where spans go.
type Config struct {
	Service    string  // OTel service.name, e.g. "order"
	Version    string  // service.version
	InstanceID string  // service.instance.id (the Consul instance ID)
	Endpoint   string  // OTEL_EXPORTER_OTLP_ENDPOINT, e.g. http://127.0.0.1:4317; "" disables export
	SampleRate float64 // fraction of new traces sampled; parents' decisions are kept
	// Exporter, when set, replaces the OTLP exporter (tests use an
	// in-memory one).
	Exporter sdktrace.SpanExporter
}

// Telemetry is a configured tracer provider and propagator.
type Telemetry struct {
	TracerProvider *sdktrace.TracerProvider
	Propagator     propagation.TextMapPropagator
}

// Tracer returns a named tracer of the provider.
func (t *Telemetry) Tracer(name string) trace.Tracer { return t.TracerProvider.Tracer(name) }

// Shutdown flushes pending spans and stops the exporter.
func (t *Telemetry) Shutdown(ctx context.Context) error { return t.TracerProvider.Shutdown(ctx) }

// New builds the tracer provider for cfg.
func New(ctx context.Context, cfg Config) (*Telemetry, error) {
	res, err := resource.Merge(resource.Default(), resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName(cfg.Service),
		semconv.ServiceVersion(cfg.Version),
		semconv.ServiceInstanceID(cfg.InstanceID),
	))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRate))),
	}
	exporter := cfg.Exporter
	if exporter == nil && cfg.Endpoint != "" {
		exporter, err = otlpExporter(ctx, cfg.Endpoint)
		if err != nil {
			return nil, err
		}
	}
	if exporter != nil {
		opts = append(opts, sdktrace.WithBatcher(exporter))
	}
	return &Telemetry{
		TracerProvider: sdktrace.NewTracerProvider(opts...),
		Propagator:     w3c{propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})},
	}, nil
}

// The headers w3c reads, in the canonical form net/http stores them in.
var (
	traceparentHeader = http.CanonicalHeaderKey("traceparent")
	baggageHeader     = http.CanonicalHeaderKey("baggage")
)

// w3c is W3C TraceContext + Baggage. Extracting from HTTP headers that
// carry neither traceparent nor baggage (every request that starts a
// trace) returns ctx at once, as the composite would after looking both
// up: the lookups canonicalize their keys, which costs two allocations a
// request.
type w3c struct{ propagation.TextMapPropagator }

func (p w3c) Extract(ctx context.Context, carrier propagation.TextMapCarrier) context.Context {
	if h, ok := carrier.(propagation.HeaderCarrier); ok && len(h[traceparentHeader]) == 0 && len(h[baggageHeader]) == 0 {
		return ctx
	}
	return p.TextMapPropagator.Extract(ctx, carrier)
}

// otlpExporter dials endpoint, a URL whose scheme says whether to use TLS
// (https) or not (http), as OTEL_EXPORTER_OTLP_ENDPOINT does.
func otlpExporter(ctx context.Context, endpoint string) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_ENDPOINT must be a URL like http://host:4317, got %q", endpoint)
	}
	opts := []otlptracegrpc.Option{otlptracegrpc.WithEndpoint(u.Host)}
	if u.Scheme == "http" {
		opts = append(opts, otlptracegrpc.WithInsecure())
	}
	exp, err := otlptracegrpc.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("telemetry: OTLP exporter: %w", err)
	}
	return exp, nil
}
