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
// The last good policies outlive the process when the caller wants
// (package policystate keeps them in Consul under mesh/state/policy/):
// BuilderOptions.OnLastGood hears of each change to them (a new value
// accepted, or the key deleted: back to defaults), never of a value
// accepted again or rejected, and SeedLastGood restores them before the
// first build. The first build then forgets a restored key that is not in
// KV any more, so a restart keeps the "deleted means defaults" rule.
//
// A Service or Instance that changed is a new one in the next mesh, and
// one that did not is, as a rule, the very same pointer (a build from
// nothing makes everything anew): translate compares meshes by identity
// (translate.Changed), which may name more than changed, never less.
//
// A build costs what changed, not the size of the mesh. The snapshot's
// maps and the mesh's are persistent (internal/pmap), so the Builder
// starts from the previous mesh and pmap.Diff of the two snapshots names
// the services and policy keys to check again:
//
//	snapshot n-1 ─┐
//	              ├─ Diff ─▶ changed services ─▶ parse, upstreams, prefix claims ─┐
//	snapshot n  ──┘          changed KV keys ──▶ policy in force ─────────────────┤
//	                                                                              ▼
//	mesh n-1 ── Set the touched Services and Instances, share the rest ──▶ mesh n
//
// Per-service results are kept between builds: the Service and Instance
// structs themselves (never modified once built, so meshes share them),
// the problems by the input they were found in (a service, a prefix, a KV
// key), the claims on each public prefix, the policy in force per key,
// and Mesh.Callers, the reverse of the upstream graph.
//
// Some changes still cost more than themselves. A service that appears,
// goes, or joins or leaves the mesh changes which upstreams are valid
// everywhere, so that build (and every build while an instance ID is
// registered twice) starts from nothing, O(mesh). A policy change makes
// Mesh.Policies anew, O(policies); a problem that appears or goes, the
// sorted Mesh.Problems, O(problems). Every build makes the same mesh as
// one from nothing would (TestIncrementalEqualsFromNothing).
package model
