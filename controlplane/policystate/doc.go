// Package policystate keeps the model's last good policy per service in
// Consul KV, so that it survives a restart of the control plane: a
// restart that finds a bad mesh/policy/<service> keeps serving the policy
// that was in force before (PolicySource last_good), not the defaults.
//
//	mesh/policy/<svc> ──catalog──▶ model.Builder ──OnLastGood──▶ Writer.Set (never blocks)
//	                                    ▲                            │ latest value per service
//	                                    │ SeedLastGood               ▼
//	             Restore (before the first build) ◀── mesh/state/policy/<svc> ◀── Writer.Run (PUT/DELETE,
//	                                                                               retried with backoff)
//
// Keys and values. One key per service, Prefix+service
// (mesh/state/policy/order), in the mesh/state/ folder that the control
// plane's ACL token may write (consul/acl/controlplane.hcl). Its value is
// the accepted mesh/policy/<service> value, byte for byte: `consul kv get
// mesh/state/policy/order` is a policy document meshctl and the control
// plane parse as they parse the live one.
//
// When it is written. When the builder accepts a value that differs from
// its last good one (a new good policy), the service's key is PUT; when
// mesh/policy/<service> is deleted, it is DELETEd (a deleted key means
// back to defaults, deliberately, and so after a restart too). A value
// accepted again, a rejected one and a rebuild write nothing. The builder
// only records the latest value per service (Writer.Set, under the
// builder's lock, never waits for Consul); Writer.Run writes it off the
// push path, and while Consul fails it backs off exponentially (logged
// once when writes start failing and once when they work again), keeping
// only the newest value of each service. On shutdown it makes one last
// attempt, bounded by WriterOptions.FlushTimeout.
//
// Load order. Restore reads the whole folder before the first model is
// built (the control plane calls it before it runs the pipeline), retrying
// while Consul is unreachable, since no catalog snapshot can come before
// Consul answers anyway. A stored value that no longer parses (a stricter
// parser, a smaller POLICY_MAX_BYTES) or whose key names no service is
// ignored, with one log line naming the key and the reason. The first
// build then compares each service's mesh/policy/ value with what was
// restored: the same value is in force (source kv, nothing written), a
// new good one replaces it, a bad one leaves it in force (source
// last_good, and the problem is reported as for any rejected value), and
// a restored service whose mesh/policy/ key is gone is forgotten, its
// state key deleted.
//
// Several replicas of the control plane write the same keys with the
// values each accepted; they read the same mesh/policy/ folder, so they
// converge on the same value (a lagging replica may write an older
// accepted value for a moment, until it sees the newer one).
package policystate
