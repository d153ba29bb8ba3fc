package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// Node metadata keys a sidecar's Envoy bootstrap may set to move its
// listeners (numbers or numeric strings).
const (
	MetaInboundPort  = "inbound_port"
	MetaOutboundPort = "outbound_port"
)

// Source is where snapshots come from (catalog.Watcher).
type Source interface {
	Changed() <-chan struct{}
	Take() (*catalog.Snapshot, time.Time)
}

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
}

// Server is the xDS server: it turns catalog snapshots into per-node
// snapshots in a go-control-plane cache and serves them over ADS.
type Server struct {
	log     *slog.Logger
	metrics *Metrics
	opts    Options
	cfgFP   string

	cache   cachev3.SnapshotCache
	tracker *tracker

	ctx    context.Context // ends the xDS streams on Stop
	cancel context.CancelFunc
	grpc   *grpc.Server

	mu   sync.Mutex
	mesh *model.Mesh
	memo *upstreamMemo
	// groups are the snapshots built this far, by the fingerprints of
	// their inputs: every node with the same inputs (the instances of one
	// service, as a rule) shares one snapshot and its resources.
	groups map[string]*group
	// failing are the keys whose last build failed; every pass retries them.
	failing  map[string]bool
	nodes    map[string]*nodeState     // by cache key
	nodeOpts map[string]translate.Node // node metadata overrides, by node ID
	metaErr  map[string]string         // node ID → metadata problem
	ready    bool
	lastPass time.Time
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
		log:      log,
		metrics:  o.Metrics,
		opts:     o,
		cfgFP:    configFP(o.Translate),
		memo:     newUpstreamMemo(),
		groups:   map[string]*group{},
		failing:  map[string]bool{},
		nodes:    map[string]*nodeState{},
		nodeOpts: map[string]translate.Node{},
		metaErr:  map[string]string{},
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.tracker = newTracker(o.Logger.With("component", "xds"), o.Metrics)
	s.tracker.classify = s.classify
	s.tracker.seen = s.nodeSeen
	s.cache = cachev3.NewSnapshotCache(true, nodeHash{}, cacheLogger{log})
	return s
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

// Run feeds the server from src until ctx ends: changes are debounced
// (Quiet, at most MaxDelay) and then applied in one pass.
func (s *Server) Run(ctx context.Context, src Source) error {
	var (
		timer     *time.Timer
		fire      <-chan time.Time
		deadline  time.Time
		pending   *catalog.Snapshot
		firstSeen time.Time
	)
	for {
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return ctx.Err()
		case <-src.Changed():
			snap, seen := src.Take()
			if snap == nil {
				continue
			}
			pending = snap
			if firstSeen.IsZero() || (!seen.IsZero() && seen.Before(firstSeen)) {
				firstSeen = seen
			}
			now := time.Now()
			if timer == nil {
				deadline = now.Add(s.opts.MaxDelay)
				timer = time.NewTimer(s.opts.Quiet)
				fire = timer.C
			} else {
				timer.Reset(min(s.opts.Quiet, time.Until(deadline)))
			}
		case <-fire:
			timer, fire = nil, nil
			s.Apply(pending, firstSeen)
			pending, firstSeen = nil, time.Time{}
		}
	}
}

// Apply builds the mesh from snap and updates every node whose inputs
// changed. seen is when the change was seen in Consul (for the latency
// metric; zero skips it). Run calls it; tests may call it directly.
func (s *Server) Apply(snap *catalog.Snapshot, seen time.Time) {
	m := s.opts.Model.Build(snap)
	// Only Run (or a test) calls Apply, so the mesh read here is the one
	// apply replaces.
	prev := s.Mesh()
	if prev == nil || !sameSlice(prev.Problems, m.Problems) {
		s.metrics.setProblems(m.Problems)
	}
	ch := changedKeys(prev, m)
	// Lock order is tracker, then server: ask the tracker first, and only
	// when a snapshot may have to be dropped.
	var connected map[string]bool
	if ch.full || len(ch.removed) > 0 {
		connected = s.tracker.connectedKeys()
	}
	if failing := s.apply(m, seen, ch, connected); failing || ch.full || ch.membership {
		// An unknown node's instance may have registered, or a node's
		// build error changed its notes.
		s.tracker.reclassify()
	}
}

// changes is what changedKeys found.
type changes struct {
	keys, removed []string
	// full: the set of services changed (or there was no mesh): visit
	// every key.
	full bool
	// membership: some service's set of instance IDs changed.
	membership bool
}

// apply sets m and rebuilds the keys ch names; it reports whether any
// node's build is failing (before or after).
func (s *Server) apply(m *model.Mesh, seen time.Time, ch changes, connected map[string]bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.mesh = m
	start := time.Now()
	var set, failed int
	hadFailing := len(s.failing) > 0

	keys, removed, full := ch.keys, ch.removed, ch.full
	if full {
		// Every key: the set of services changed (or this is the first
		// pass), so anything may depend on anything.
		keys = make([]string, 0, m.Instances.Len()+1)
		keys = append(keys, edgeKey)
		for id := range m.Instances.Keys() {
			keys = append(keys, id)
		}
	}
	for key := range s.failing {
		keys = append(keys, key)
	}
	visited := make(map[string]bool, len(keys))
	for _, key := range keys {
		if visited[key] {
			continue
		}
		visited[key] = true
		if key != edgeKey && m.Instance(key) == nil {
			continue
		}
		if key == edgeKey && m.Instance(key) != nil {
			s.log.Error("instance ID collides with the edge snapshot key; its sidecar gets no configuration", "node", key)
		}
		if ok, err := s.buildLocked(key, seen); ok {
			set++
		} else if err != nil {
			failed++
		}
	}
	// Instances that left the catalog: drop their snapshot once their
	// Envoy is gone (while it is connected it keeps its last config).
	if full {
		removed = removed[:0]
		for key := range s.nodes {
			if key != edgeKey && m.Instance(key) == nil {
				removed = append(removed, key)
			}
		}
		for id := range s.nodeOpts {
			if m.Instance(id) == nil && s.nodes[id] == nil {
				removed = append(removed, id)
			}
		}
	}
	for _, key := range removed {
		if m.Instance(key) != nil || connected[key] {
			continue
		}
		if st := s.nodes[key]; st != nil {
			s.release(st)
			delete(s.nodes, key)
			delete(s.failing, key)
			s.cache.ClearSnapshot(key)
		}
		delete(s.nodeOpts, key)
		delete(s.metaErr, key)
	}
	if full {
		s.memo.sweep(m)
	}
	s.ready = true
	s.lastPass = time.Now()
	s.log.Debug("pass done", "index", m.Index, "full", full, "visited", len(visited), "set", set, "failed", failed, "took", time.Since(start).String())
	return hadFailing || len(s.failing) > 0
}

// changedKeys returns the cache keys whose inputs may have changed from
// prev to m, and the instances that left: a service's own instances when
// its config or its instances changed, and the instances of every service
// calling it (and the edge, if it is public) when its config or endpoints
// changed. It reports full when the set of services changed: then every
// key is visited. The model shares every unchanged Service between
// meshes, so pmap.Diff finds the changed ones and Mesh.Callers their
// callers: the cost is that of the change, whatever the size of the mesh.
func changedKeys(prev, m *model.Mesh) (ch changes) {
	if prev == nil || prev.Services.Len() != m.Services.Len() {
		return changes{full: true}
	}
	for name := range pmap.Diff(prev.Services, m.Services, func(a, b *model.Service) bool { return a == b }) {
		old, svc := prev.Service(name), m.Service(name)
		if old == nil || svc == nil {
			return changes{full: true}
		}
		sameInsts := sameSlice(old.Instances, svc.Instances)
		own := old.ConfigHash != svc.ConfigHash || !sameInsts
		callers := old.ConfigHash != svc.ConfigHash || old.EndpointsHash != svc.EndpointsHash
		if own {
			for _, in := range svc.Instances {
				ch.keys = append(ch.keys, in.ID)
			}
		}
		if !sameInsts && !sameIDs(old.Instances, svc.Instances) {
			ch.membership = true
			for _, in := range old.Instances {
				if m.Instance(in.ID) == nil {
					ch.removed = append(ch.removed, in.ID)
				}
			}
		}
		if (callers && len(svc.PublicPrefixes) > 0) || !slices.Equal(old.PublicPrefixes, svc.PublicPrefixes) {
			ch.keys = append(ch.keys, edgeKey)
		}
		if callers {
			for _, caller := range m.Callers(name) {
				for _, in := range m.Service(caller).Instances {
					ch.keys = append(ch.keys, in.ID)
				}
			}
		}
	}
	if !sameSlice(prev.Routes, m.Routes) && !slices.Equal(prev.Routes, m.Routes) {
		ch.keys = append(ch.keys, edgeKey)
	}
	return ch
}

// sameSlice reports whether a and b are the same slice, not merely equal:
// what the model keeps for what did not change.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}

func sameIDs(a, b []*model.Instance) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].ID != b[i].ID {
			return false
		}
	}
	return true
}

// buildLocked rebuilds the snapshot of one key if its inputs changed. It
// reports whether a snapshot was set, and the error that prevented it.
func (s *Server) buildLocked(key string, seen time.Time) (set bool, err error) {
	m := s.mesh
	edge := key == edgeKey
	in := m.Instance(key)
	if !edge && in == nil {
		return false, nil // unknown node: nothing to build until it registers
	}
	st := s.nodes[key]
	if st == nil {
		st = &nodeState{key: key, edge: edge}
		s.nodes[key] = st
	}
	opts := translate.Node{ID: key}
	if o, ok := s.nodeOpts[key]; ok {
		opts = o
	}
	var cfgFP, epFP string
	if edge {
		cfgFP, epFP = edgeFP(m, s.cfgFP)
	} else {
		cfgFP, epFP = sidecarFP(m, in, opts, s.cfgFP)
	}
	if cfgFP == st.configFP && epFP == st.epFP && st.lastErr == "" && st.group != nil {
		return false, nil // nothing this node depends on changed
	}

	defer func() {
		// translate packs only validated names; a panic here is a bug,
		// and it must cost this node its update, not the process.
		if r := recover(); r != nil {
			err = fmt.Errorf("translate panicked: %v", r)
			s.fail(st, cfgFP, epFP, "panic", err)
			set = false
		}
	}()

	gkey := cfgFP + "|" + epFP
	g := s.groups[gkey]
	if g == nil {
		var config map[resource.Type][]*entry
		if old := st.group; old != nil && old.configFP == cfgFP {
			config = old.config
		} else {
			var res *translate.Resources
			if st.edge {
				res, err = translate.EdgeConfig(m, s.opts.Translate, s.memo)
			} else {
				res, err = translate.SidecarConfig(m, opts, s.opts.Translate, s.memo)
			}
			if err != nil {
				s.fail(st, cfgFP, epFP, "translate", err)
				return false, err
			}
			config = entriesOf(s.memo, res)
		}
		var cla []*endpointv3.ClusterLoadAssignment
		if st.edge {
			cla = translate.EdgeEndpoints(m, s.memo)
		} else {
			cla = translate.SidecarEndpoints(m, opts, s.memo)
		}
		endpoints := endpointEntries(s.memo, cla)
		snap, versions, err := assemble(config, endpoints)
		if err != nil {
			s.fail(st, cfgFP, epFP, "validate", err)
			return false, err
		}
		g = &group{key: gkey, configFP: cfgFP, config: config, endpoints: endpoints,
			snapshot: snap, versions: versions}
		s.groups[gkey] = g
	}
	if err := s.cache.SetSnapshot(context.Background(), key, g.snapshot); err != nil {
		if g.refs == 0 {
			delete(s.groups, gkey)
		}
		s.fail(st, cfgFP, epFP, "set", err)
		return false, err
	}
	if st.lastErr != "" {
		s.log.Info("node configuration builds again", "node", key, "was", st.lastErr)
	}
	if st.group != g {
		s.release(st)
		g.refs++
		st.group = g
	}
	st.opts = opts
	st.configFP, st.epFP = cfgFP, epFP
	st.setAt = time.Now()
	st.builds++
	st.lastErr = ""
	delete(s.failing, key)
	typ := nodeSidecar
	if st.edge {
		typ = nodeEdge
	}
	s.metrics.Pushes.WithLabelValues(typ).Inc()
	if !seen.IsZero() {
		s.metrics.PushLatency.Observe(time.Since(seen).Seconds())
	}
	return true, nil
}

// release drops a node's reference to its snapshot group; the last
// reference frees it.
func (s *Server) release(st *nodeState) {
	if st.group == nil {
		return
	}
	st.group.refs--
	if st.group.refs <= 0 {
		delete(s.groups, st.group.key)
	}
	st.group = nil
}

// fail records why a node's snapshot was not set. The node keeps its
// previous snapshot; the failure is logged when it first appears, and
// every pass tries the node again.
func (s *Server) fail(st *nodeState, cfgFP, epFP, kind string, err error) {
	msg := kind + ": " + err.Error()
	if msg != st.lastErr {
		level := slog.LevelError
		if errors.Is(err, translate.ErrNoAppPort) {
			level = slog.LevelWarn // the model already reported the bad meta
		}
		s.log.Log(context.Background(), level, "node configuration not set; the node keeps its previous snapshot",
			"node", st.key, "stage", kind, "err", err)
		s.metrics.ValidationFailures.WithLabelValues("snapshot", kind).Inc()
	}
	st.lastErr = msg
	s.failing[st.key] = true
	st.configFP, st.epFP = cfgFP, epFP
}

// nodeSeen applies a sidecar's metadata on its first request, before the
// cache answers it, so the Envoy never sees listeners on default ports it
// did not ask for.
func (s *Server) nodeSeen(n *corev3.Node) {
	if translate.IsEdge(n.GetCluster()) {
		return
	}
	opts, problem := parseNodeMeta(n)
	s.mu.Lock()
	defer s.mu.Unlock()
	if problem != "" {
		if s.metaErr[n.GetId()] != problem {
			s.log.Warn("envoy node metadata rejected; default listener ports are used", "node", n.GetId(),
				"metadata", metadataJSON(n), "err", problem)
		}
		s.metaErr[n.GetId()] = problem
	} else {
		delete(s.metaErr, n.GetId())
	}
	if old, ok := s.nodeOpts[n.GetId()]; ok && old == opts {
		return
	}
	s.nodeOpts[n.GetId()] = opts
	if s.mesh == nil {
		return
	}
	if st := s.nodes[n.GetId()]; st != nil && st.opts == opts && st.lastErr == "" && st.group != nil {
		return
	}
	s.buildLocked(n.GetId(), time.Time{})
}

// parseNodeMeta reads the listener ports a sidecar asks for.
func parseNodeMeta(n *corev3.Node) (translate.Node, string) {
	opts := translate.Node{ID: n.GetId()}
	fields := n.GetMetadata().GetFields()
	var problems []string
	port := func(key string) uint32 {
		v, ok := fields[key]
		if !ok {
			return 0
		}
		var p float64
		if num, isNum := v.AsInterface().(float64); isNum {
			p = num
		} else if str, isStr := v.AsInterface().(string); isStr {
			parsed, err := strconv.Atoi(str)
			if err != nil {
				problems = append(problems, fmt.Sprintf("%s=%q is not a port number", key, str))
				return 0
			}
			p = float64(parsed)
		} else {
			problems = append(problems, fmt.Sprintf("%s has type %T, want a port number", key, v.AsInterface()))
			return 0
		}
		if p != math.Trunc(p) || p < 1 || p > 65535 {
			problems = append(problems, fmt.Sprintf("%s=%v is not a TCP port (1-65535)", key, p))
			return 0
		}
		return uint32(p)
	}
	opts.InboundPort = port(MetaInboundPort)
	opts.OutboundPort = port(MetaOutboundPort)
	if len(problems) > 0 {
		return translate.Node{ID: n.GetId()}, fmt.Sprint(problems)
	}
	return opts, ""
}

// classify says what a node is and what is odd about it.
func (s *Server) classify(id, cluster string) (string, []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if translate.IsEdge(cluster) {
		return nodeEdge, nil
	}
	var notes []string
	if p := s.metaErr[id]; p != "" {
		notes = append(notes, "metadata rejected ("+p+"): default listener ports are used")
	}
	if s.mesh == nil {
		return nodeUnknown, append(notes, "no catalog snapshot yet")
	}
	in := s.mesh.Instance(id)
	if in == nil {
		return nodeUnknown, append(notes, "node id is no instance of a meshed service in the catalog; no configuration until one registers")
	}
	if cluster != in.Service {
		notes = append(notes, fmt.Sprintf("node cluster %q differs from the instance's service %q; the node id decides", cluster, in.Service))
	}
	if st := s.nodes[id]; st != nil && st.lastErr != "" {
		notes = append(notes, "configuration not set: "+st.lastErr)
	}
	return nodeSidecar, notes
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
		nodes[i].Snapshot = s.snapshotStatusLocked(nodes[i].Key, nodes[i].ID)
		seen[nodes[i].Key] = true
	}
	// Keys with a snapshot but no Envoy yet.
	for _, key := range sortedKeys(s.nodes) {
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

func (s *Server) snapshotStatusLocked(key, id string) *SnapshotStatus {
	st := s.nodes[key]
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
	if _, ok := s.nodes[key]; !ok && isEdgeID(nodeID) {
		key = edgeKey
	}
	st := s.nodes[key]
	s.mu.Unlock()
	if st == nil || st.group == nil {
		return key, nil, nil, fmt.Errorf("%w %q", ErrNoSnapshot, nodeID)
	}
	snap, err := s.cache.GetSnapshot(key)
	if err != nil {
		return key, nil, nil, fmt.Errorf("%w %q: %v", ErrNoSnapshot, nodeID, err)
	}
	res = map[string][]cachetypes.Resource{}
	versions = map[string]string{}
	for _, typ := range snapshotTypes {
		items := snap.GetResources(typ)
		for _, name := range sortedKeys(items) {
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

// Serve serves ADS (state of the world and delta) on lis until Stop.
func (s *Server) Serve(lis net.Listener) error {
	s.mu.Lock()
	if s.grpc != nil {
		s.mu.Unlock()
		return errors.New("serve: already serving")
	}
	if s.ctx.Err() != nil { // stopped before it started
		s.mu.Unlock()
		lis.Close()
		return nil
	}
	s.grpc = grpc.NewServer(
		grpc.MaxConcurrentStreams(math.MaxUint32),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: s.opts.Keepalive, Timeout: 10 * time.Second}),
		// Envoy pings on its own schedule; do not punish it for it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	)
	xds := serverv3.NewServer(s.ctx, s.cache, s.tracker)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, xds)
	g := s.grpc
	s.mu.Unlock()
	s.log.Info("xDS server listening", "addr", lis.Addr().String())
	if err := g.Serve(lis); !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// Stop ends every stream (Envoys keep their config and reconnect to
// another instance or to this one after a restart), then stops the gRPC
// server, waiting up to grace for in-flight responses.
func (s *Server) Stop(grace time.Duration) {
	s.mu.Lock()
	s.cancel()
	g := s.grpc
	s.mu.Unlock()
	if g == nil {
		return
	}
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(grace):
		g.Stop()
		<-done
	}
	s.log.Info("xDS server stopped")
}

// cacheLogger adapts slog to go-control-plane's logger. Its warnings are
// routine (an ADS request naming a subset of resources while Envoy
// catches up) and go to debug with the rest; errors stay errors.
type cacheLogger struct{ l *slog.Logger }

func (c cacheLogger) Debugf(f string, a ...any) { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Infof(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Warnf(f string, a ...any)  { c.l.Debug(fmt.Sprintf(f, a...)) }
func (c cacheLogger) Errorf(f string, a ...any) { c.l.Error(fmt.Sprintf(f, a...)) }
