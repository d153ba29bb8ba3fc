// Package kit is what every Meshop service is built from; it holds no
// business logic. Each concern is a small package of its own:
//
//	config     environment → validated settings (errors name the variable)
//	log        slog JSON with svc, trace_id, span_id; a go-kit adapter
//	telemetry  OpenTelemetry tracer provider, OTLP exporter, propagators
//	errs       one error type with a Kind → HTTP status and JSON body
//	instrument go-kit endpoint middleware: logging and Prometheus metrics
//	httpserver /health, /ready, /metrics, JSON codecs, graceful lifecycle
//	consulreg  Consul registration with the mesh meta of DESIGN §5
//	sqldb      sqlx over PostgreSQL or SQLite, embedded migrations
//	meshclient calls to other services by name (sidecar or direct mode)
package kit
