// Package model turns a catalog snapshot into the mesh model: services,
// instances (address, port, version, health), the upstream graph declared
// in mesh_upstreams, the public routes declared in mesh_public_prefixes, and
// each service's policy from KV. It knows nothing about Envoy.
//
//	catalog.Snapshot ──Builder.Build──▶ *Mesh ──▶ translate
//	      │                  │             │
//	      │ Services, Meta   │ last good   └─ Problems (Validate)
//	      │ Policies (raw)   │ policy per      logged once when they
//	      └──────────────────┘ service          appear; OnProblem counts them
//
// Bad input never stops a build: each problem is recorded with the
// service, instance and field it concerns, and only the offending piece is
// dropped (an unknown upstream, a bad prefix, a rejected policy: that
// service keeps its last good policy). Validate returns every problem at
// once.
//
// Per service, ConfigHash and EndpointsHash fingerprint what callers'
// clusters/routes and endpoints are built from, so later stages rebuild
// only what a change touches.
package model
