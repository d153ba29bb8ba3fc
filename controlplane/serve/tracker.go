package serve

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// Node types, for metrics and /debug/nodes.
const (
	nodeSidecar   = "sidecar"
	nodeProxyless = "proxyless" // a gRPC client (node metadata mesh_flavor=proxyless)
	nodeEdge      = "edge"
	nodeUnknown   = "unknown" // a sidecar whose ID is no instance in the catalog
)

// Sync states of a connected node and of each resource type it was sent
// (NodeStatus.Sync, SyncByType):
//
//	SYNCED  the node ACKed the version of the type its snapshot holds
//	        (or that version was set less than StaleAfter ago and the
//	        node runs the one before, which it ACKed: a push in flight)
//	NACKED  the node's last answer to the last version sent was a NACK
//	        (overall: any type is NACKED)
//	STALE   the node does not run its snapshot's version, for longer than
//	        StaleAfter (sent and not yet ACKed, or not sent), or it has
//	        ACKed nothing yet
//
// A disconnected node has no sync state.
const (
	SyncSynced = "SYNCED"
	SyncNacked = "NACKED"
	SyncStale  = "STALE"
)

// Defaults of Options.StaleAfter and Options.NodeForgetAfter.
const (
	// DefaultStaleAfter is how long a version may go unacknowledged
	// before its node is STALE: 5s, ten times the convergence p99 of
	// 2,000 Envoys in BENCHMARKS.md, so a push in flight is not reported
	// as a problem but a node that stopped answering is.
	DefaultStaleAfter = 5 * time.Second
	// DefaultNodeForgetAfter is how long a node with no open stream
	// stays listed (and keeps what it ACKed, for a reconnect).
	DefaultNodeForgetAfter = 5 * time.Minute
)

// NodeStatus is what the control plane knows about one Envoy node: its
// connection and the xDS conversation per type URL.
type NodeStatus struct {
	ID      string `json:"id"`
	Cluster string `json:"cluster"`
	// Type is sidecar, edge or unknown.
	Type string `json:"type"`
	// Key is the snapshot cache key (the ID; "edge" for all edges).
	Key            string         `json:"snapshot_key"`
	Connected      bool           `json:"connected"`
	ConnectedSince *time.Time     `json:"connected_since,omitempty"`
	Streams        int            `json:"streams"`
	Metadata       map[string]any `json:"metadata,omitempty"`
	UserAgent      string         `json:"user_agent,omitempty"`
	// LastSent, LastAck: by type URL.
	LastSent map[string]Sent `json:"last_sent,omitempty"`
	LastAck  map[string]Ack  `json:"last_ack,omitempty"`
	LastNack *Nack           `json:"last_nack,omitempty"`
	Nacks    int             `json:"nacks"`
	// LastSeen is when the node last sent a request on any stream.
	LastSeen *time.Time `json:"last_seen,omitempty"`
	// Sync is the node's overall sync state, SyncByType its state per
	// type URL it was sent (SYNCED, NACKED, STALE; see SyncSynced);
	// empty while the node is disconnected.
	Sync       string            `json:"sync,omitempty"`
	SyncByType map[string]string `json:"sync_by_type,omitempty"`
	// Notes explain anything odd about the node (unknown ID, metadata
	// problems, cluster not matching the instance's service).
	Notes []string `json:"notes,omitempty"`
	// Snapshot is the node's snapshot state (filled by the server).
	Snapshot *SnapshotStatus `json:"snapshot,omitempty"`

	// nacked is, per type URL, the version the node's last answer of
	// that type rejected (gone once it ACKs that type).
	nacked map[string]string
	// left is when its last stream closed (zero while connected); queued
	// says it is in the tracker's departed queue.
	left   time.Time
	queued bool
}

// target is the version of one type a snapshot key holds, since when,
// and when the Consul change it carries was seen (zero: unknown).
type target struct {
	version string
	// at and seen as Unix nanoseconds (0: unknown): a target per type
	// per node, half the size of two time.Time.
	atNs, seenNs int64
}

func newTarget(version string, at, seen time.Time) target {
	return target{version: version, atNs: unixNanos(at), seenNs: unixNanos(seen)}
}

func (t target) at() time.Time   { return fromUnixNanos(t.atNs) }
func (t target) seen() time.Time { return fromUnixNanos(t.seenNs) }

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(ns int64) time.Time {
	if ns == 0 {
		return time.Time{}
	}
	return time.Unix(0, ns)
}

// departure is a node that had no open stream at a time.
type departure struct {
	id string
	at time.Time
}

// Sent is the last response of one type sent to a node.
type Sent struct {
	Version   string    `json:"version"`
	Nonce     string    `json:"nonce"`
	Resources int       `json:"resources"`
	At        time.Time `json:"at"`
}

// Ack is the last version of one type a node accepted.
type Ack struct {
	Version string    `json:"version"`
	At      time.Time `json:"at"`
}

// Nack is the last response a node rejected, with Envoy's reason.
type Nack struct {
	TypeURL string `json:"type_url"`
	// Version is the version Envoy rejected; Kept is the one it still
	// runs.
	Version string    `json:"version"`
	Kept    string    `json:"kept_version"`
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// sentNonce is a response not answered yet: its nonce and version.
type sentNonce struct{ nonce, version string }

// maxUnanswered bounds a stream's unanswered responses.
const maxUnanswered = 64

// answered removes the response of nonce from the unanswered ones and
// returns it (zero if unknown).
func (s *stream) answered(nonce string) Sent {
	for i, sn := range s.sent {
		if sn.nonce == nonce {
			s.sent = slices.Delete(s.sent, i, i+1)
			return Sent{Version: sn.version, Nonce: nonce}
		}
	}
	return Sent{}
}

type streamKey struct {
	delta bool
	id    int64
}

type stream struct {
	node  string // node ID, "" until the first request
	delta bool
	// sent are the responses the node has not answered yet, oldest
	// first: the version a nonce carried names what a NACK rejects (and
	// what a delta ACK accepts). Envoy answers every response, so it
	// holds about one per type: a short slice costs less than a map.
	sent []sentNonce
}

// tracker follows every stream (through go-control-plane's callbacks)
// and records per node what was sent, acknowledged and rejected. It
// classifies nodes against the mesh the server last gave it (setMesh)
// and never calls into the server.
type tracker struct {
	log     *slog.Logger
	metrics *Metrics

	mu   sync.Mutex
	mesh *model.Mesh
	// streams are keyed by kind and ID: go-control-plane numbers SotW and
	// delta streams with separate counters, so IDs repeat across kinds.
	streams map[streamKey]*stream
	nodes   map[string]*NodeStatus
	// counts are the connected nodes by type (the Connected gauge).
	counts map[string]int
	// targets are, per snapshot key and type URL, the version its
	// snapshot holds (what a node should run; the server sets them).
	targets map[string]map[string]target
	// departed are the nodes that lost their last stream, oldest first;
	// forget drops them once they have been gone forgetAfter. A node is
	// in it at most once (queued), so it is bounded by the nodes.
	departed    []departure
	forgetAfter time.Duration
	// forgotten are the nodes forgotten since the server last took them
	// (takeForgotten), so it drops their snapshots.
	forgotten  map[string]bool
	staleAfter time.Duration
	now        func() time.Time
	// onAck is told a node ACKed a version of a type it did not run
	// before, outside mu: the convergence metric.
	onAck func(key, typeURL, version string, connectedSince time.Time)
}

func newTracker(log *slog.Logger, m *Metrics) *tracker {
	return &tracker{
		log:         log,
		metrics:     m,
		streams:     map[streamKey]*stream{},
		nodes:       map[string]*NodeStatus{},
		counts:      map[string]int{},
		targets:     map[string]map[string]target{},
		forgotten:   map[string]bool{},
		forgetAfter: DefaultNodeForgetAfter,
		staleAfter:  DefaultStaleAfter,
		now:         time.Now,
	}
}

// OnStreamOpen implements serverv3.Callbacks.
func (t *tracker) OnStreamOpen(_ context.Context, id int64, _ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[streamKey{false, id}] = &stream{}
	return nil
}

// OnDeltaStreamOpen implements serverv3.Callbacks.
func (t *tracker) OnDeltaStreamOpen(_ context.Context, id int64, _ string) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.streams[streamKey{true, id}] = &stream{delta: true}
	return nil
}

// OnStreamClosed implements serverv3.Callbacks.
func (t *tracker) OnStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{false, id}) }

// OnDeltaStreamClosed implements serverv3.Callbacks.
func (t *tracker) OnDeltaStreamClosed(id int64, _ *corev3.Node) { t.closed(streamKey{true, id}) }

func (t *tracker) closed(id streamKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	delete(t.streams, id)
	if s == nil || s.node == "" {
		return
	}
	n := t.nodes[s.node]
	if n == nil {
		return
	}
	n.Streams--
	now := t.now()
	if n.Streams <= 0 {
		n.Streams = 0
		t.setLocked(n, false, n.Type)
		n.ConnectedSince = nil
		t.log.Info("envoy disconnected", "node", n.ID, "cluster", n.Cluster)
		if n.Type == nodeUnknown {
			// Forget nodes that were never in the catalog, so random
			// IDs cannot grow the table without bound (and let the
			// server drop what it keeps for them: metadata, and a
			// snapshot if their instance has come since).
			delete(t.nodes, s.node)
			if n.Key != edgeKey {
				t.forgotten[s.node] = true
			}
		} else {
			t.departLocked(n, now)
		}
	}
	t.forgetLocked(now)
}

// departLocked records that n has no open stream since at: it is
// forgotten forgetAfter later unless it reconnects.
func (t *tracker) departLocked(n *NodeStatus, at time.Time) {
	n.left = at
	if !n.queued {
		n.queued = true
		t.departed = append(t.departed, departure{id: n.ID, at: at})
	}
}

// forgetLocked drops the nodes that have had no open stream for
// forgetAfter. It looks only at the front of the departed queue: the
// cost of a call is what it forgets plus one (amortized over the
// disconnections that queued them). A node that reconnected and left
// again is queued again with its new time.
func (t *tracker) forgetLocked(now time.Time) {
	i := 0
	for ; i < len(t.departed); i++ {
		d := t.departed[i]
		if now.Sub(d.at) < t.forgetAfter {
			break
		}
		n := t.nodes[d.id]
		if n == nil || !n.queued {
			continue
		}
		n.queued = false
		switch {
		case n.Connected || n.left.IsZero():
			// Back since: not forgotten.
		case now.Sub(n.left) >= t.forgetAfter:
			delete(t.nodes, d.id)
			if n.Key != edgeKey { // edges share one snapshot, kept
				t.forgotten[d.id] = true
			}
		default: // left again later than this entry says
			t.departLocked(n, n.left)
		}
	}
	if i == 0 {
		return
	}
	clear(t.departed[:i])
	t.departed = t.departed[i:]
	if cap(t.departed) > 64 && len(t.departed) < cap(t.departed)/4 {
		t.departed = slices.Clone(t.departed) // give back the array
	}
}

// request handles the node of a request and reports whether it is the
// stream's first. A node without an ID cannot be given a configuration;
// its stream is refused with a message Envoy logs.
func (t *tracker) request(id streamKey, node *corev3.Node) (first bool, err error) {
	delta := id.delta
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	if s == nil { // open callback not seen (cannot happen, but be total)
		s = &stream{delta: delta}
		t.streams[id] = s
	}
	now := t.now()
	if s.node != "" {
		if n := t.nodes[s.node]; n != nil {
			n.LastSeen = &now
		}
		return false, nil
	}
	if node.GetId() == "" {
		t.log.Warn("envoy connected without a node id; stream refused", "stream", id.id, "delta", delta, "cluster", node.GetCluster())
		return false, status.Error(codes.InvalidArgument, "meshop control plane: node.id is empty; set it to the Consul instance ID (sidecar) or edge-<n> with node.cluster=edge")
	}
	if refusal := clusterRefusal(t.mesh, node); refusal != "" {
		// The node stays listed with the reason, but gets no stream.
		n := t.nodes[node.GetId()]
		if n == nil {
			n = &NodeStatus{ID: node.GetId(), Type: nodeTypeOf(node), LastSent: map[string]Sent{}, LastAck: map[string]Ack{}}
			t.nodes[node.GetId()] = n
		}
		n.Cluster, n.Metadata, n.Notes = node.GetCluster(), node.GetMetadata().AsMap(), []string{refusal}
		n.LastSeen = &now
		if !n.Connected {
			t.departLocked(n, now) // listed for forgetAfter, like a node that left
		}
		t.forgetLocked(now)
		t.log.Warn("node refused", "node", node.GetId(), "cluster", node.GetCluster(), "err", refusal)
		return false, status.Error(codes.PermissionDenied, "meshop control plane: "+refusal)
	}
	s.node = node.GetId()
	n := t.nodes[s.node]
	if n == nil {
		n = &NodeStatus{ID: node.GetId(), LastSent: map[string]Sent{}, LastAck: map[string]Ack{}}
		t.nodes[s.node] = n
	}
	n.Cluster = node.GetCluster()
	n.Metadata = node.GetMetadata().AsMap()
	n.UserAgent = strings.TrimSpace(node.GetUserAgentName() + " " + node.GetUserAgentVersion())
	typ, notes := classify(t.mesh, n)
	n.Notes = notes
	t.setLocked(n, n.Connected, typ)
	n.Key = n.ID
	if translate.IsEdge(n.Cluster) {
		n.Key = edgeKey
	}
	n.Streams++
	n.LastSeen = &now
	n.left = time.Time{}
	if !n.Connected {
		n.ConnectedSince = &now
		t.setLocked(n, true, n.Type)
		attrs := []any{"node", n.ID, "cluster", n.Cluster, "type", n.Type, "delta", delta}
		if len(n.Notes) > 0 {
			attrs = append(attrs, "notes", strings.Join(n.Notes, "; "))
		}
		if n.Type == nodeUnknown {
			t.log.Warn("envoy connected with a node id that is no instance in the catalog; it gets configuration once an instance with this ID registers", attrs...)
		} else {
			t.log.Info("envoy connected", attrs...)
		}
	}
	return true, nil
}

// clusterRefusal is why a node (a sidecar or a proxyless app, not the
// edge) gets no configuration at all: its bootstrap names a service other
// than its instance's, so its listeners, routes and secrets would be
// another service's.
func clusterRefusal(m *model.Mesh, node *corev3.Node) string {
	if m == nil || translate.IsEdge(node.GetCluster()) {
		return ""
	}
	in := m.Instance(node.GetId())
	if in == nil || node.GetCluster() == in.Service {
		return ""
	}
	// A node's snapshot is its instance's, keyed by the node id alone: a
	// node of another service (whose token xdsauth accepted for that
	// other service) must not get it, secrets included.
	return fmt.Sprintf("node.cluster %q is not the service %q of instance %q; a node's bootstrap names its own service",
		node.GetCluster(), in.Service, in.ID)
}

// nodeTypeOf is the type a refused node is listed with.
func nodeTypeOf(node *corev3.Node) string {
	if node.GetMetadata().GetFields()[translate.MetaFlavor].GetStringValue() == translate.FlavorProxyless {
		return nodeProxyless
	}
	return nodeSidecar
}

// classify says what a node is in mesh m and what is odd about it.
func classify(m *model.Mesh, n *NodeStatus) (typ string, notes []string) {
	id, cluster := n.ID, n.Cluster
	if translate.IsEdge(cluster) {
		return nodeEdge, nil
	}
	if m == nil {
		return nodeUnknown, []string{"no catalog snapshot yet"}
	}
	in := m.Instance(id)
	if in == nil {
		return nodeUnknown, []string{"node id is no instance of a meshed service in the catalog; no configuration until one registers"}
	}
	if cluster != in.Service {
		notes = append(notes, fmt.Sprintf("node cluster %q differs from the instance's service %q (it changed after the node connected); the node is refused when it reconnects", cluster, in.Service))
	}
	if n.Metadata[translate.MetaFlavor] == translate.FlavorProxyless {
		return nodeProxyless, notes
	}
	return nodeSidecar, notes
}

// ackOrNack records a node's reply to a response; for a NACK it returns
// the version the node rejected ("" when unknown).
func (t *tracker) ackOrNack(id streamKey, typeURL, nonce, version, msg string, nack bool) (rejected string) {
	if nonce == "" {
		return "" // an initial request or a new subscription, not a reply
	}
	t.mu.Lock()
	s := t.streams[id]
	if s == nil || s.node == "" {
		t.mu.Unlock()
		return ""
	}
	n := t.nodes[s.node]
	if n == nil {
		t.mu.Unlock()
		return ""
	}
	now := t.now()
	sent := s.answered(nonce)
	if !nack {
		if version == "" { // delta requests carry no version: use what was sent
			version = sent.Version
		}
		prev := n.LastAck[typeURL].Version
		n.LastAck[typeURL] = Ack{Version: version, At: now}
		delete(n.nacked, typeURL)
		key, since, onAck := n.Key, n.ConnectedSince, t.onAck
		t.mu.Unlock()
		if version != prev && onAck != nil && since != nil {
			onAck(key, typeURL, version, *since)
		}
		return ""
	}
	defer t.mu.Unlock()
	n.Nacks++
	n.LastNack = &Nack{TypeURL: typeURL, Version: sent.Version, Kept: n.LastAck[typeURL].Version, Message: msg, At: now}
	if n.nacked == nil {
		n.nacked = map[string]string{}
	}
	n.nacked[typeURL] = sent.Version
	t.metrics.Nacks.WithLabelValues(typeURL, flavourOf(n.Type)).Inc()
	t.log.Warn("envoy rejected configuration (NACK); it keeps its previous version", "node", n.ID,
		"type_url", typeURL, "rejected_version", sent.Version, "kept_version", n.LastNack.Kept, "err", msg)
	return sent.Version
}

// flavourOf is the flavour label of a node type: sidecar, proxyless,
// edge, or unknown (a node whose ID is no instance).
func flavourOf(typ string) string {
	if typ == "" {
		return nodeUnknown
	}
	return typ
}

// OnStreamResponse implements serverv3.Callbacks.
func (t *tracker) OnStreamResponse(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	t.sent(streamKey{false, id}, resp.GetTypeUrl(), resp.GetVersionInfo(), resp.GetNonce(), len(resp.GetResources()))
}

// OnStreamDeltaResponse implements serverv3.Callbacks.
func (t *tracker) OnStreamDeltaResponse(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.sent(streamKey{true, id}, resp.GetTypeUrl(), resp.GetSystemVersionInfo(), resp.GetNonce(), len(resp.GetResources()))
}

func (t *tracker) sent(id streamKey, typeURL, version, nonce string, n int) {
	t.metrics.Responses.WithLabelValues(typeURL).Inc()
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.streams[id]
	if s == nil {
		return
	}
	st := Sent{Version: version, Nonce: nonce, Resources: n, At: t.now()}
	if len(s.sent) == maxUnanswered { // Envoy answers every nonce; bound it anyway
		s.sent = slices.Delete(s.sent, 0, 1)
	}
	s.sent = append(s.sent, sentNonce{nonce: nonce, version: version})
	if node := t.nodes[s.node]; node != nil {
		node.LastSent[typeURL] = st
	}
}

// OnFetchRequest implements serverv3.Callbacks (REST is not served).
func (t *tracker) OnFetchRequest(context.Context, *discoveryv3.DiscoveryRequest) error { return nil }

// OnFetchResponse implements serverv3.Callbacks.
func (t *tracker) OnFetchResponse(*discoveryv3.DiscoveryRequest, *discoveryv3.DiscoveryResponse) {}

// setLocked changes a node's connection state and type, keeping the
// connected-node counts (and gauges) right without recounting every node:
// a storm of N connections costs O(N), not O(N²).
func (t *tracker) setLocked(n *NodeStatus, connected bool, typ string) {
	if n.Connected == connected && n.Type == typ {
		return
	}
	if n.Connected {
		t.counts[n.Type]--
		t.metrics.Connected.WithLabelValues(n.Type).Set(float64(t.counts[n.Type]))
	}
	n.Connected, n.Type = connected, typ
	if connected {
		t.counts[typ]++
		t.metrics.Connected.WithLabelValues(typ).Set(float64(t.counts[typ]))
	}
}

// setMesh gives the tracker the mesh of the last pass and classifies
// again the nodes whose instance appeared, went or changed (every node
// when it had no mesh before).
func (t *tracker) setMesh(m *model.Mesh, changed []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	first := t.mesh == nil
	t.mesh = m
	reclassify := func(n *NodeStatus) {
		typ, notes := classify(m, n)
		if typ != n.Type && n.Connected {
			t.log.Info("envoy node reclassified", "node", n.ID, "from", n.Type, "to", typ)
		}
		n.Notes = notes
		t.setLocked(n, n.Connected, typ)
	}
	if first {
		for _, n := range t.nodes {
			reclassify(n)
		}
		return
	}
	for _, id := range changed {
		if n := t.nodes[id]; n != nil {
			reclassify(n)
		}
	}
}

// connected reports whether the node with this ID has an open stream.
func (t *tracker) connected(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.nodes[id]
	return n != nil && n.Connected
}

// snapshot returns deep-enough copies of every node's status, by ID,
// with their sync state.
func (t *tracker) snapshot() []NodeStatus {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	t.forgetLocked(now)
	out := make([]NodeStatus, 0, len(t.nodes))
	for _, n := range t.nodes {
		c := *n
		c.LastSent = cloneMap(n.LastSent)
		c.LastAck = cloneMap(n.LastAck)
		c.Notes = slices.Clone(n.Notes)
		c.nacked = nil
		if n.LastNack != nil {
			nk := *n.LastNack
			c.LastNack = &nk
		}
		c.Sync, c.SyncByType = t.syncLocked(n, now)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b NodeStatus) int { return strings.Compare(a.ID, b.ID) })
	return out
}

// len is the number of nodes the tracker holds (after forgetting those
// gone for forgetAfter).
func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(t.now())
	return len(t.nodes)
}

// setTargets records the versions a key's snapshot holds now, seen
// being when the Consul change it carries was seen (zero: unknown). The
// server calls it for every snapshot it sets.
func (t *tracker) setTargets(key string, versions map[string]string, seen time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := t.targets[key]
	if cur == nil {
		cur = make(map[string]target, len(versions))
		t.targets[key] = cur
	}
	now := t.now()
	for typ, v := range versions {
		if cur[typ].version != v {
			cur[typ] = newTarget(v, now, seen)
		}
	}
}

// takeForgotten returns the IDs of the nodes forgotten since its last
// call.
func (t *tracker) takeForgotten() []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(t.now())
	if len(t.forgotten) == 0 {
		return nil
	}
	out := slices.Collect(maps.Keys(t.forgotten))
	t.forgotten = map[string]bool{}
	return out
}

// dropTargets forgets a key whose snapshot was dropped.
func (t *tracker) dropTargets(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.targets, key)
}

// targetOf is the version a key's snapshot holds of a type.
func (t *tracker) targetOf(key, typeURL string) target {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.targets[key][typeURL]
}

// syncLocked is a node's sync state, overall and by type (see
// SyncSynced).
func (t *tracker) syncLocked(n *NodeStatus, now time.Time) (string, map[string]string) {
	if !n.Connected || n.ConnectedSince == nil {
		return "", nil
	}
	want := t.targets[n.Key]
	by := make(map[string]string, len(n.LastSent))
	overall := SyncSynced
	if len(n.LastSent) == 0 {
		overall = SyncStale // nothing sent, nothing ACKed
	}
	for typ, sent := range n.LastSent {
		st := typeSync(sent, n.LastAck[typ].Version, n.nacked[typ], want[typ], *n.ConnectedSince, now, t.staleAfter)
		by[typ] = st
		if st == SyncNacked || (st == SyncStale && overall == SyncSynced) {
			overall = st
		}
	}
	return overall, by
}

// typeSync is the state of one type: sent is the last response of it
// sent to the node, acked the version it last ACKed, nacked the version
// its last answer rejected (""), want the version its snapshot holds
// (zero: no snapshot known, judged against what was sent), connected
// when the node connected.
func typeSync(sent Sent, acked, nacked string, want target, connected, now time.Time, staleAfter time.Duration) string {
	if want.version == "" {
		want = newTarget(sent.Version, sent.At, time.Time{})
	}
	if acked == want.version {
		return SyncSynced
	}
	lastNacked := nacked != "" && nacked == sent.Version
	if lastNacked && sent.Version == want.version {
		return SyncNacked // it rejects the version it should run
	}
	// Behind since the version was set, or since the node connected.
	since := want.at()
	if since.IsZero() {
		since = sent.At
	}
	if connected.After(since) {
		since = connected
	}
	switch {
	case now.Sub(since) > staleAfter:
		return SyncStale
	case lastNacked: // a new version in flight after a NACK
		return SyncNacked
	case acked != "": // it runs the previous version; the new one is in flight
		return SyncSynced
	default:
		return SyncStale
	}
}

// syncCounts counts the connected nodes by flavour and sync state (the
// nodes gauge, computed when scraped).
func (t *tracker) syncCounts() map[[2]string]int {
	t.mu.Lock()
	defer t.mu.Unlock()
	now := t.now()
	out := map[[2]string]int{}
	for _, n := range t.nodes {
		if !n.Connected {
			continue
		}
		st, _ := t.syncLocked(n, now)
		out[[2]string{flavourOf(n.Type), st}]++
	}
	return out
}

func cloneMap[V any](m map[string]V) map[string]V {
	out := make(map[string]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
