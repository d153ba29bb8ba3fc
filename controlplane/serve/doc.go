// Package serve is the xDS server: it turns catalog snapshots into one
// go-control-plane snapshot per Envoy node and serves them over ADS, state
// of the world and delta, on one gRPC port.
//
//	catalog.Watcher ──Changed/Take──▶ Run: debounce (quiet 100ms, max 1s)
//	                                      │
//	                                      ▼ Apply
//	                        model.Builder.Build ──▶ *model.Mesh
//	                                      │
//	      translate.Changed(previous, mesh) ─▶ read keys that differ
//	                                      │
//	      translate.Upstream for each replaced service ─▶ its Shared
//	      (clusters, virtual host, load assignments; validated, hashed
//	      and compacted once, whoever calls the service)
//	                                      │
//	      keys to gather again: the readers of the changed read keys
//	      (what each node's last gathering reported), instances that came
//	      or went, keys left pending; keys to re-assemble: those whose
//	      snapshot holds a Shared whose load assignments changed
//	                                      │
//	      per key: translate.InputsOf ─▶ inputs, reads
//	      snapshot key = inputs key + versions of the Shared it
//	      references ──unchanged──▶ skip
//	                                      │ changed
//	      inputs.Build() ─▶ own resources; with the Shared's Parts:
//	      Validate every resource, consistent ──fail──▶ not set; logged,
//	                                      │               counted, /debug/nodes
//	                                      ▼
//	                          SnapshotCache.SetSnapshot ──▶ ADS streams
//	                                                          │
//	      tracker (callbacks): connected since, last sent, ◀──┘
//	      last ACK, last NACK with Envoy's message, per node
//
// Nothing here lists what translation reads: translation reports it
// (translate.Reads, inputs keys), so a field added to translation's
// inputs reaches the nodes that read it without a change here.
//
// The files, one job each:
//
//	server.go     the Server, its options, and its read-only views
//	              (Ready, Mesh, Nodes, Resources) for the debug API
//	debounce.go   Run: waits for the catalog to be quiet, then applies
//	pass.go       the rebuild pass: what changed, which keys to visit,
//	              and the build of one key's snapshot
//	shared.go     the Shared of every service and their entries
//	snapshots.go  per-key build state, the readers index, snapshot
//	              groups, assembly and the consistency check
//	entries.go    a resource validated, hashed and compacted once; the
//	              pool that shares identical ones between nodes
//	compact.go    the compact form of a resource (its encoded bytes)
//	tracker.go    streams and nodes: what was sent, ACKed and NACKed,
//	              each node's sync state against its snapshot's versions;
//	              a node gone for NodeForgetAfter is forgotten (a queue
//	              of departures swept on disconnects and reads)
//	grpc.go       the ADS gRPC server and go-control-plane's callbacks;
//	              AddService puts more services on its port (CSDS,
//	              package csds, which reads Nodes and Resources)
//	caches.go     the snapshot caches: Envoys' (ADS mode) and gRPC
//	              clients' (a gRPC client names only what it dials)
//	nodemeta.go   a node's metadata: its flavour (mesh_flavor=proxyless
//	              for a gRPC client) and a sidecar's listener ports
//	metrics.go    the Prometheus metrics
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
// A pass visits only the keys that read what changed, so it costs the
// same in a mesh of 100 services or of 1,000.
//
// A snapshot is built for a node when it first asks (its first request,
// before the cache answers it) or an operator reads it, and kept up to
// date by every pass from then on, until the tracker forgets the node
// (no stream for NodeForgetAfter). The edge's is always kept. An instance
// whose Envoy never connected costs its part of the model and nothing
// else, so a catalog of 10,000 services costs memory for the nodes that
// are there, not for every instance. Likewise the services' proxyless
// resources are kept only once a gRPC client has asked (one pass over
// the mesh adds them); until then each service keeps its Envoy ones.
// A sidecar's node metadata (inbound_port, outbound_port) is applied on
// its first request, before the cache answers it; an inbound_port other
// than the one its instance registered is refused (translate's
// ErrInboundPortMoved), so no stream can move a node's inbound listener.
package serve
