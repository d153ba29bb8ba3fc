// Package translate turns the mesh model into Envoy v3 resources for one
// node. It is a pure function of its inputs: no I/O, no clock, no state,
// golden-file tested (testdata/in/<case>.yaml → testdata/out/<case>.<type>.yaml,
// regenerate with go test ./translate -update).
//
//	model.Mesh ─┬─ Sidecar(node) ──▶ listeners inbound (→ local_app) and
//	            │                    outbound (vhost per declared upstream → svc_<u>),
//	            │                    clusters local_app, otel_collector, svc_<u>[_<ver>],
//	            │                    load assignments svc_<u>[_<ver>]
//	            └─ Edge() ─────────▶ listener edge: /api/<prefix> → svc_<owner>,
//	                                 JSON 404, CORS, local rate limit
//	   Upstreams: per-service clusters and load assignments, shared by every
//	   node that calls the service (serve memoizes them; Direct rebuilds)
//
// Every connection manager traces with the OpenTelemetry tracer to
// otel_collector and logs JSON to stdout with the trace id. Every route to
// a service carries its policy's timeout and retries (full retries for
// idempotent methods and requests with an Idempotency-Key; connect-level
// retries otherwise); every upstream cluster its circuit breaker, outlier
// detection, connect timeout and HTTP version. A traffic split becomes a
// weighted route over per-version clusters svc_<service>_<version>.
//
// Validate checks a resource the way Envoy would, including the messages
// packed in Any fields.
package translate
