// Package serve is the xDS server: it turns catalog snapshots into one
// go-control-plane snapshot per Envoy node and serves them over ADS, state
// of the world and delta, on one gRPC port.
//
//	catalog.Watcher ──Changed/Take──▶ Run: debounce (quiet 100ms, max 1s)
//	                                      │
//	                                      ▼ Apply
//	                        model.Builder.Build ──▶ *model.Mesh
//	                                      │
//	      changedKeys: pmap.Diff(previous mesh, mesh) ─▶ changed services
//	      ─▶ their own instances, their callers' (Mesh.Callers), the edge
//	                                      │
//	      per cache key (instance ID, or "edge" for every edge node):
//	      fingerprint of the inputs ──unchanged──▶ skip
//	                                      │ changed
//	      translate (shared svc_<x> clusters and load assignments come from
//	      upstreamMemo: built, validated and hashed once per change)
//	                                      │
//	      Validate every resource, consistent ──fail──▶ not set; logged,
//	                                      │               counted, /debug/nodes
//	                                      ▼
//	                          SnapshotCache.SetSnapshot ──▶ ADS streams
//	                                                          │
//	      tracker (callbacks): connected since, last sent, ◀──┘
//	      last ACK, last NACK with Envoy's message, per node
//
// Once validated and hashed, each resource is kept compact: its name as a
// Go field, everything else as its encoded bytes (compact.go). The cache
// marshals it by copying those bytes, and identical resources of different
// nodes share one entry. Consistency is checked on the references each
// entry recorded when it was built.
//
// Each type's version is a hash of its resources, so a push that changes
// only endpoints sends only EDS, and an unchanged node gets nothing. The
// delta version map is filled from the same per-resource hashes, so the
// cache never re-marshals a resource per node to compute it.
//
// The model shares every unchanged Service between meshes, so a pass
// visits only the keys a change can concern and costs the same in a mesh
// of 100 services or of 1,000. A change to the set of services visits
// every key (their fingerprints still skip the unchanged ones).
//
// A snapshot is kept for every instance in the catalog whether or not its
// Envoy is connected, so an Envoy gets its config on its first request.
// A sidecar's node metadata (inbound_port, outbound_port) is applied on
// its first request, before the cache answers it.
package serve
