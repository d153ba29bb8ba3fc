// Package kit is what every Meshop service is built from; it holds no
// business logic. Each concern is a small package of its own:
//
//	app           a service process's wiring: settings, logger, telemetry, mesh client, database, run
//	auth          bearer tokens verified against auth's JWKS; the caller's Identity in the context
//	auth/authtest test tokens and a stand-in for the token middleware
//	config        environment → validated settings (errors name the variable)
//	consulreg     Consul registration with the mesh meta of DESIGN §5
//	errs          one error type with a Kind → HTTP status and JSON body
//	events        domain events: transactional outbox, relay to NATS JetStream, consumers
//	httpserver    /health, /ready, /metrics, JSON codecs, graceful lifecycle
//	instrument    go-kit endpoint middleware: logging and Prometheus metrics
//	kittest       the test helpers services share: test databases, outbox reads, API calls
//	log           slog JSON with svc, trace_id, span_id; a go-kit adapter
//	meshclient    gRPC calls to other services by name (sidecar or proxyless mode)
//	paging        limit and cursor of list endpoints, and the page they answer
//	sqldb         sqlx over PostgreSQL or SQLite: open, migrate, transactions, store errors
//	telemetry     OpenTelemetry tracer provider, OTLP exporter, propagators
package kit
