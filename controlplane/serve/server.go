package serve

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// Options configure a Server.
type Options struct {
	Logger    *slog.Logger
	Metrics   *Metrics
	Translate translate.Config
	// Model builds meshes; it keeps the last good policies. Required.
	Model *model.Builder
	// Quiet is how long the catalog must be still before a push (default
	// 100ms); MaxDelay bounds how long a push waits for quiet (default 1s).
	Quiet, MaxDelay time.Duration
	// Keepalive is the gRPC server keepalive ping interval (default 30s).
	Keepalive time.Duration
	// GRPCOptions are added to the ADS server's own: its TLS credentials
	// and the authentication of its streams (package xdsauth).
	GRPCOptions []grpc.ServerOption
	// Identities, when set, are told which services have Envoys connected
	// and issue their leaves (SetLeaf); see secrets.go.
	Identities Identities
	// NodeForgetAfter is how long a node with no open stream stays in
	// /debug/nodes (default DefaultNodeForgetAfter, 5m); StaleAfter how
	// long a version may go unacknowledged before its node is STALE
	// (default DefaultStaleAfter, 5s).
	NodeForgetAfter, StaleAfter time.Duration
}

// Server is the xDS server: it turns catalog snapshots into per-node
// snapshots in a go-control-plane cache and serves them over ADS.
type Server struct {
	log     *slog.Logger
	metrics *Metrics
	opts    Options
	cache   caches
	// tracker follows the streams and what each node acknowledged. It has
	// its own lock and never calls into the server, so the server may ask
	// it while holding mu.
	tracker *tracker
	grpc    grpcServer

	// mu guards the build state: a pass (pass.go) and a node's first
	// request (nodemeta.go) both build snapshots.
	mu   sync.Mutex
	mesh *model.Mesh
	// leaves are the services' leaf certificates (SetLeaf).
	leaves  map[string]Leaf
	streams envoyStreams
	shared  *sharedSet
	snaps   *snapshots
	// meta is what each node's metadata asks for, by node ID;
	// metaOrphans are the IDs in meta with no instance, forgotten once
	// their Envoy is gone too.
	meta        map[string]nodeMeta
	metaOrphans map[string]bool
	ready       bool

	// health is what Apply last counted of the services' passing
	// instances.
	health health
}

// New returns a server; call Run to feed it and Serve to serve it.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Model == nil {
		o.Model = model.NewBuilder(model.BuilderOptions{Logger: o.Logger, OnProblem: o.Metrics.ProblemFound})
	}
	if o.Quiet <= 0 {
		o.Quiet = 100 * time.Millisecond
	}
	if o.MaxDelay < o.Quiet {
		o.MaxDelay = max(time.Second, o.Quiet)
	}
	if o.Keepalive <= 0 {
		o.Keepalive = 30 * time.Second
	}
	log := o.Logger.With("component", "serve")
	s := &Server{
		log:         log,
		metrics:     o.Metrics,
		opts:        o,
		tracker:     newTracker(o.Logger.With("component", "xds"), o.Metrics),
		shared:      newSharedSet(),
		snaps:       newSnapshots(),
		meta:        map[string]nodeMeta{},
		metaOrphans: map[string]bool{},
		leaves:      map[string]Leaf{},
		streams:     envoyStreams{tokens: map[streamKey]string{}, holders: map[streamKey]struct{ svc, tok string }{}},
	}
	if o.NodeForgetAfter > 0 {
		s.tracker.forgetAfter = o.NodeForgetAfter
	}
	if o.StaleAfter > 0 {
		s.tracker.staleAfter = o.StaleAfter
	}
	s.tracker.onAck = s.acked
	o.Metrics.Nodes.setSource(s.tracker.syncCounts)
	s.grpc.init()
	s.cache = newCaches(log)
	return s
}

// acked is told a node ACKed a version it did not run before: when the
// version is its snapshot's and the node was connected when it was set,
// the time since its Consul change was seen is a convergence.
func (s *Server) acked(key, typeURL, version string, connectedSince time.Time) {
	want := s.tracker.targetOf(key, typeURL)
	if want.version != version || want.seen().IsZero() || !connectedSince.Before(want.at()) {
		return
	}
	s.metrics.Convergence.Observe(s.tracker.now().Sub(want.seen()).Seconds())
}

// nodeHash keys the cache: all edges share one snapshot, every sidecar
// has its own.
type nodeHash struct{}

func (nodeHash) ID(n *corev3.Node) string {
	if n == nil {
		return ""
	}
	if translate.IsEdge(n.GetCluster()) {
		return edgeKey
	}
	return n.GetId()
}

// Ready reports whether the first pass is done (every known node has its
// snapshot, or a reported reason why not).
func (s *Server) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready
}

// Mesh returns the current model (nil before the first pass).
func (s *Server) Mesh() *model.Mesh {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.mesh
}

// Nodes returns the status of every node that connected and every key
// with a snapshot.
func (s *Server) Nodes() []NodeStatus {
	nodes := s.tracker.snapshot()
	s.mu.Lock()
	defer s.mu.Unlock()
	seen := map[string]bool{}
	for i := range nodes {
		n := &nodes[i]
		n.Snapshot = s.snapshotStatusLocked(n.Key, n.ID)
		n.Notes = s.notesLocked(n)
		seen[n.Key] = true
	}
	// Keys with a snapshot but no Envoy yet.
	for _, key := range slices.Sorted(maps.Keys(s.snaps.nodes)) {
		if seen[key] {
			continue
		}
		typ := nodeSidecar
		if key == edgeKey {
			typ = nodeEdge
		}
		nodes = append(nodes, NodeStatus{ID: key, Type: typ, Key: key, Snapshot: s.snapshotStatusLocked(key, key)})
	}
	return nodes
}

// notesLocked explains what is odd about a connected node: rejected
// metadata, then what the tracker found (an ID that is no instance, a
// cluster that is not its service), then a configuration that does not
// build and missing metadata.
func (s *Server) notesLocked(n *NodeStatus) []string {
	if n.Type == nodeEdge {
		return n.Notes
	}
	var notes []string
	if p := s.meta[n.ID].problem; p != "" {
		notes = append(notes, "metadata rejected ("+p+"): default listener ports are used")
	}
	notes = append(notes, n.Notes...)
	if n.Type == nodeUnknown {
		return notes
	}
	if st := s.snaps.nodes[n.ID]; st != nil && st.lastErr != "" {
		notes = append(notes, "configuration not set: "+st.lastErr)
	}
	if len(n.Metadata) == 0 && n.Type == nodeSidecar {
		notes = append(notes, "no node metadata: default listener ports are used")
	}
	return notes
}

func (s *Server) snapshotStatusLocked(key, id string) *SnapshotStatus {
	st := s.snaps.nodes[key]
	if st == nil {
		return nil
	}
	out := &SnapshotStatus{Key: key, Builds: st.builds, Error: st.lastErr}
	if st.group != nil {
		out.Versions = versionsJSON(st.group.versions)
	}
	if !st.setAt.IsZero() {
		t := st.setAt
		out.SetAt = &t
	}
	if s.mesh != nil && key != edgeKey {
		out.Problems = s.mesh.ProblemsFor(id)
	}
	return out
}

// ErrNoSnapshot is returned by Resources for a node without a snapshot.
var ErrNoSnapshot = errors.New("no snapshot for this node")

// Resources returns the resources of the snapshot a node receives, by
// type URL (full trees, not the compact form the cache holds), and its
// versions. nodeID is resolved like Envoy's node would
// be: an edge node (connected, or named edge-<n>) maps to the edge key.
func (s *Server) Resources(nodeID string) (key string, res map[string][]cachetypes.Resource, versions map[string]string, err error) {
	key = nodeID
	for _, n := range s.tracker.snapshot() {
		if n.ID == nodeID {
			key = n.Key
		}
	}
	s.mu.Lock()
	if _, ok := s.snaps.nodes[key]; !ok && isEdgeID(nodeID) {
		key = edgeKey
	}
	st := s.snaps.nodes[key]
	if st == nil && key != edgeKey && s.mesh != nil && s.mesh.Instance(key) != nil {
		// Never asked for: build it now (and keep it, like a node's).
		s.build(key, time.Time{}, true)
		st = s.snaps.nodes[key]
	}
	var flavor string
	if st != nil && st.group != nil {
		flavor = st.group.flavor
	}
	hasGroup := st != nil && st.group != nil
	s.mu.Unlock()
	if !hasGroup {
		return key, nil, nil, fmt.Errorf("%w %q", ErrNoSnapshot, nodeID)
	}
	snap, err := s.cache.get(key, flavor)
	if err != nil {
		return key, nil, nil, fmt.Errorf("%w %q: %v", ErrNoSnapshot, nodeID, err)
	}
	res = map[string][]cachetypes.Resource{}
	versions = map[string]string{}
	for _, typ := range withSecrets {
		items := snap.GetResources(typ)
		if len(items) == 0 && !slices.Contains(snapshotTypes, typ) {
			continue // no secrets
		}
		for _, name := range slices.Sorted(maps.Keys(items)) {
			full, err := expand(items[name])
			if err != nil {
				return key, nil, nil, fmt.Errorf("%s %q: %w", shortType(typ), name, err)
			}
			res[typ] = append(res[typ], full)
		}
		versions[typ] = snap.GetVersion(typ)
	}
	return key, res, versions, nil
}

func isEdgeID(id string) bool {
	if len(id) <= len("edge-") || id[:5] != "edge-" {
		return false
	}
	_, err := strconv.Atoi(id[5:])
	return err == nil
}

// health keeps the meshed services with no passing instance (no
// endpoint: what their callers are sent is empty). Apply updates it with
// the services the new mesh rebuilt, so a pass costs the services that
// changed, not the mesh.
type health struct {
	mu       sync.Mutex
	services pmap.Map[*model.Service] // of the mesh last counted
	none     map[string]bool          // services with no passing instance
}

func (h *health) update(m *model.Mesh, metrics *Metrics) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.none == nil {
		h.none = map[string]bool{}
	}
	for name := range pmap.Diff(h.services, m.Services, func(a, b *model.Service) bool { return a == b }) {
		if svc := m.Service(name); svc != nil && svc.EndpointCount() == 0 {
			h.none[name] = true
		} else {
			delete(h.none, name)
		}
	}
	h.services = m.Services
	metrics.ServicesWithoutPassing.Set(float64(len(h.none)))
	metrics.ServicePassing.set(m.Services)
}

// ServicesWithoutPassing returns the meshed services that have no passing
// instance (no endpoint), sorted: their callers get an empty load
// assignment (endpoints stay passing-only, DESIGN §6).
func (s *Server) ServicesWithoutPassing() []string {
	s.health.mu.Lock()
	defer s.health.mu.Unlock()
	return slices.Sorted(maps.Keys(s.health.none))
}
