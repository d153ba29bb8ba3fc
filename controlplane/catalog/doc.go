// Package catalog watches Consul and publishes immutable snapshots of what
// the mesh is made of: every service, every instance with its aggregated
// health, the raw policies under mesh/policy/, the raw service-intentions
// config entries and the Connect CA's trust domain and roots.
//
//	Consul HTTP API                          Watcher.Run (one goroutine owns the state)
//	  /v1/catalog/services      ──blocking──▶ ┐
//	  /v1/health/service/<s>    ──blocking──▶ │
//	     (one query per service)              ├─ update ─▶ state ─changed?─▶ *Snapshot
//	  /v1/kv/mesh/policy/       ──blocking──▶ │                                │
//	  /v1/config/service-intentions ─blocking▶ │                     Changed() / Take()
//	  /v1/connect/ca/roots      ──blocking──▶ ┘
//
// The health endpoint (not the raw catalog) gives each instance's check
// status, so a critical check removes the instance from the endpoints at
// once, without waiting for deregistration; instances stay in the snapshot
// so their own sidecar keeps its configuration.
//
// Nothing is published until every query has answered once, so the first
// snapshot is complete. While Consul is unreachable nothing is published:
// consumers keep the last snapshot. Failed queries back off exponentially
// with jitter and retry without blocking; the outage is logged once when
// it starts and once when every query has recovered.
//
// Snapshots are persistent maps (internal/pmap): each is the previous one
// with the services and policies that changed set, sharing everything
// else, including the instance slice of every unchanged service. A change
// costs O(log services) to publish, and consumers find what changed with
// pmap.Diff at the same cost instead of comparing every service.
//
// A Consul agent that restarts reports its checks critical until they run
// again. For Options.Settle after an outage, instances that were passing
// before it stay passing (and stay at all) in published snapshots, so a
// Consul restart never empties every Envoy's endpoints; after Settle,
// Consul's view is published as it is.
package catalog
