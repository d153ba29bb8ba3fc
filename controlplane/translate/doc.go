// Package translate turns the mesh model into Envoy v3 resources for one
// node. It is a pure function of its inputs: no I/O, no clock, no state,
// golden-file tested (testdata/in/<case>.yaml → testdata/out/<case>.<type>.yaml,
// regenerate with go test ./translate -update).
//
//	model.Mesh ─┬─ Upstream(svc) per service ─▶ Shared: clusters svc_<s>[_<v>],
//	            │    the outbound virtual host (Config, keyed by ConfigKey)
//	            │    and load assignments: what every caller of svc shares
//	            │
//	            ├─ InputsOf(node) ─▶ Inputs, Reads; Inputs.Build() ─▶ NodeConfig:
//	            │    sidecar: inbound (→ local_app, local_app_grpc), outbound
//	            │      (vhost per declared upstream), local_app,
//	            │      otel_collector
//	            │    proxyless: the inbound listener of the app's xDS gRPC
//	            │      server
//	            │    edge: listener edge, /api/<prefix> → svc_<owner>, JSON
//	            │      404, CORS, local rate limit
//	            │    + the names of the Shared it references, whose Parts in
//	            │      the node's flavour join its snapshot (Envoy: clusters
//	            │      and load assignments; gRPC: API listener <s>, route <s>,
//	            │      clusters, load assignments of mesh_grpc_port)
//	            │
//	            └─ Changed(previous, mesh) ─▶ the read keys that differ
//
// Translation reports what it reads. InputsOf reads the mesh through a
// recording reader and returns the inputs with its Reads; Build reads
// nothing but the inputs, whose Key hashes every field. Serve compares
// keys and reads, never a list of fields kept by hand; FromScratch
// composes the same functions for the goldens and tests.
//
// Every connection manager traces with the OpenTelemetry tracer to
// otel_collector and logs JSON to stdout with the trace id. Every route to
// a service carries its policy's timeout and retries (full retries for
// idempotent methods and requests with an Idempotency-Key; connect-level
// retries otherwise); every upstream cluster its circuit breaker, outlier
// detection, connect timeout and HTTP version. A traffic split becomes a
// weighted route over per-version clusters svc_<service>_<version>.
//
// With Config.MTLS and a known trust domain, nodes speak mutual TLS
// (mtls.go: SDS secrets mesh_identity and mesh_roots for Envoys, the
// certificate provider instance mesh for gRPC) and every inbound side
// enforces its service's intentions in an RBAC filter (rbac.go). A node
// then also reads the trust domain and its service's intentions (read
// keys trust_domain, intentions/<service>, intentions/*).
//
// Validate checks a resource the way Envoy would, including the messages
// packed in Any fields.
package translate
