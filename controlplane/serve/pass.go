package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// Apply builds the mesh from snap and rebuilds every node whose inputs
// changed. seen is when the change was seen in Consul (for the latency
// metric; zero skips it). Run calls it; tests may call it directly.
func (s *Server) Apply(snap *catalog.Snapshot, seen time.Time) {
	m := s.opts.Model.Build(snap)
	// Only Run (or a test) calls Apply, so the mesh read here is the one
	// the pass replaces.
	prev := s.Mesh()
	if prev == nil || !sameSlice(prev.Problems, m.Problems) {
		s.metrics.setProblems(m.Problems)
	}
	changed := s.pass(m, seen)
	s.tracker.setMesh(m, changed)
	s.health.update(m, s.metrics)
}

// pass makes m the current mesh: it translates again the Shared of the
// services m replaced, then gathers again the keys that read something
// that changed (what their last gathering reported), the instances that
// appeared or went and the keys left pending by an earlier pass, and
// assembles again the snapshots that hold a Shared whose version changed.
// It returns the IDs of the instances that appeared, went or changed.
func (s *Server) pass(m *model.Mesh, seen time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.passLocked(m, seen)
}

// passLocked is pass with s.mu held.
func (s *Server) passLocked(m *model.Mesh, seen time.Time) []string {
	start := time.Now()
	first := s.mesh == nil
	ch := translate.Changed(s.mesh, m)
	var prevRoots []string
	if !first {
		prevRoots = s.mesh.RootPEMs
	}
	s.mesh = m
	s.dropForgotten()
	versions := s.shared.update(m, s.opts.Translate, &ch)

	regather := keysOf(s.snaps.readers, ch.Reads)
	regather = append(regather, ch.Instances...)
	if first {
		regather = append(regather, edgeKey) // the edge has read nothing yet
	}
	regather = append(regather, slices.Sorted(maps.Keys(s.snaps.pending))...)
	reassemble := keysOf(s.snaps.referencers, versions)
	if !slices.Equal(prevRoots, m.RootPEMs) { // every node's mesh_roots
		reassemble = append(reassemble, slices.Sorted(maps.Keys(s.snaps.nodes))...)
		s.rootsChanged(prevRoots, m.RootPEMs)
	}

	var set, failed, visited int
	done := make(map[string]bool, len(regather)+len(reassemble))
	for i, key := range append(regather, reassemble...) {
		if done[key] {
			continue
		}
		done[key] = true
		visited++
		if key != edgeKey && m.Instance(key) == nil {
			s.forget(key)
			continue
		}
		if !s.kept(key) {
			continue // built when its node first asks
		}
		if key == edgeKey && m.Instance(key) != nil {
			s.log.Error("instance ID collides with the edge snapshot key; its sidecar gets no configuration", "node", key)
		}
		if ok, err := s.build(key, seen, i < len(regather)); ok {
			set++
		} else if err != nil {
			failed++
		}
	}
	s.sweepMeta(m)
	s.ready = true
	s.log.Debug("pass done", "index", m.Index, "visited", visited, "set", set, "failed", failed, "took", time.Since(start).String())
	return ch.Instances
}

// kept reports whether a key's snapshot is kept up to date: the edge's,
// and a node's once it has asked for its configuration (nodeSeen) or an
// operator has read it (Resources), until the tracker forgets the node.
// An instance whose Envoy never connected costs no snapshot.
func (s *Server) kept(key string) bool {
	if key == edgeKey || s.snaps.nodes[key] != nil {
		return true
	}
	_, seen := s.meta[key]
	return seen
}

// dropForgotten drops the snapshots of the nodes the tracker forgot (no
// stream for NodeForgetAfter): a node that connects again gets a fresh
// one on its first request.
func (s *Server) dropForgotten() {
	for _, id := range s.tracker.takeForgotten() {
		if !s.tracker.connected(id) { // not back since
			s.dropNode(id)
		}
	}
}

// forget drops the snapshot of an instance that left the catalog, once
// its Envoy is gone: while it is connected it keeps its last
// configuration, and every pass looks at it again.
func (s *Server) forget(key string) {
	if s.tracker.connected(key) {
		s.snaps.pending[key] = true
		return
	}
	s.dropNode(key)
}

// dropNode drops everything kept for a node's key: its snapshot, the
// cache's copy, the tracker's targets, its metadata.
func (s *Server) dropNode(key string) {
	if st := s.snaps.nodes[key]; st != nil && !st.edge {
		s.snaps.drop(st)
		s.cache.clear(key)
		s.tracker.dropTargets(key)
	}
	delete(s.snaps.pending, key)
	delete(s.meta, key)
}

// build rebuilds the snapshot of one key if what it is built from
// changed: its inputs, gathered again when regather is set (otherwise
// only the Shared it references may have changed). It reports whether a
// snapshot was set, and the error that prevented it.
func (s *Server) build(key string, seen time.Time, regather bool) (set bool, err error) {
	st := s.snaps.nodes[key]
	if st == nil {
		st = &nodeState{key: key, edge: key == edgeKey}
		s.snaps.nodes[key] = st
	}
	opts := translate.Node{ID: key, Edge: st.edge}
	if meta, ok := s.meta[key]; ok && !st.edge {
		opts = meta.opts
	}
	defer func() {
		// translate packs only validated names; a panic here is a bug,
		// and it must cost this node its update, not the process.
		if r := recover(); r != nil {
			err = fmt.Errorf("translate panicked: %v", r)
			s.fail(st, "panic", err)
			set = false
		}
	}()

	var in *gathered
	if regather || st.group == nil || st.lastErr != "" || st.opts != opts { // new options (flavour, ports): translate again
		if in, err = s.gather(st, opts); err != nil {
			s.fail(st, "translate", err)
			return false, err
		}
	} else {
		in = s.sameInputs(st.group)
	}
	secrets, secretsKey := s.secretsOf(s.identityOf(st, opts))
	if secretsKey != "" {
		fp := newFP()
		fp.add(in.snapshotKey, secretsKey)
		in.snapshotKey = fp.sum()
	}
	if in.snapshotKey == st.snapshotKey && st.lastErr == "" && st.group != nil {
		st.opts = opts
		return false, nil // nothing this node is built from changed
	}
	g := s.snaps.groups[in.snapshotKey]
	if g == nil {
		if g, err = s.newGroup(st, in, secrets); err != nil {
			s.fail(st, "validate", err)
			return false, err
		}
		s.snaps.groups[g.key] = g
	}
	// The tracker learns the versions before the cache sends them, so a
	// node's ACK always finds them.
	s.tracker.setTargets(key, g.versions, seen)
	if err := s.cache.set(key, g.flavor, g.snapshot); err != nil {
		if st.group != nil {
			s.tracker.setTargets(key, st.group.versions, time.Time{}) // still in force
		}
		if g.refs == 0 {
			delete(s.snaps.groups, g.key)
		}
		s.fail(st, "set", err)
		return false, err
	}
	s.setDone(st, g, opts, seen)
	return true, nil
}

// gathered is a node's inputs and the key of the snapshot they make.
type gathered struct {
	// inputs is nil when the node's inputs did not change since its
	// current group was translated (sameInputs).
	inputs translate.Inputs
	// inputsKey identifies the inputs; snapshotKey the inputs and the
	// versions of the Shared they reference.
	inputsKey, snapshotKey string
}

// gather reads a node's inputs from the mesh and records what it read in
// the readers index.
func (s *Server) gather(st *nodeState, opts translate.Node) (*gathered, error) {
	in, reads, err := translate.InputsOf(s.mesh, opts, s.opts.Translate, s.shared.shared)
	s.snaps.index(st, reads)
	if err != nil {
		return nil, err
	}
	key := in.Key()
	return &gathered{inputs: in, inputsKey: key, snapshotKey: s.snapshotKey(key, in.SharedNames())}, nil
}

// sameInputs is what gather would return for a node whose inputs did not
// change since it was translated into g.
func (s *Server) sameInputs(g *group) *gathered {
	return &gathered{inputsKey: g.inputsKey, snapshotKey: s.snapshotKey(g.inputsKey, g.upstreams)}
}

// snapshotKey identifies a snapshot: the key of the inputs translated and
// the versions of the Shared it references.
func (s *Server) snapshotKey(inputsKey string, upstreams []string) string {
	fp := newFP()
	fp.add(inputsKey)
	for _, name := range upstreams {
		fp.add(name, s.shared.byName[name].version)
	}
	return fp.sum()
}

// newGroup translates a node's inputs (unless its current group was
// translated from the same ones) and assembles its snapshot with the
// Shared the translation references and the node's secrets.
func (s *Server) newGroup(st *nodeState, in *gathered, secrets []*entry) (*group, error) {
	g := &group{key: in.snapshotKey, inputsKey: in.inputsKey}
	if old := st.group; old != nil && old.inputsKey == in.inputsKey {
		g.own, g.upstreams, g.flavor = old.own, old.upstreams, old.flavor
	} else {
		nc := in.inputs.Build()
		g.own, g.upstreams, g.flavor = ownEntries(s.snaps.pool, nc), nc.Upstreams, nc.Flavor
	}
	shared := make([]*sharedEntries, len(g.upstreams))
	for i, name := range g.upstreams {
		shared[i] = s.shared.byName[name]
	}
	var err error
	g.snapshot, g.versions, err = assemble(g.own, shared, g.flavor, secrets)
	g.bytes = groupBytes(g.own, shared, g.flavor, secrets)
	return g, err
}

// setDone records a snapshot set for a node.
func (s *Server) setDone(st *nodeState, g *group, opts translate.Node, seen time.Time) {
	if st.lastErr != "" {
		s.log.Info("node configuration builds again", "node", st.key, "was", st.lastErr)
	}
	s.snaps.use(st, g)
	st.opts = opts
	st.snapshotKey = g.key
	st.setAt = time.Now()
	st.builds++
	st.lastErr = ""
	delete(s.snaps.pending, st.key)
	typ := nodeSidecar
	switch {
	case st.edge:
		typ = nodeEdge
	case opts.Flavor == translate.FlavorProxyless:
		typ = nodeProxyless
	}
	s.metrics.Pushes.WithLabelValues(typ).Inc()
	s.metrics.NodeConfigBytes.Observe(float64(g.bytes))
	if !seen.IsZero() {
		s.metrics.PushLatency.Observe(time.Since(seen).Seconds())
	}
}

// fail records why a node's snapshot was not set. The node keeps its
// previous snapshot; the failure is logged when it first appears, and
// every pass tries the node again.
func (s *Server) fail(st *nodeState, kind string, err error) {
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
	st.snapshotKey = ""
	s.snaps.pending[st.key] = true
}

// sameSlice reports whether a and b are the same slice, not merely equal:
// what the model keeps for what did not change.
func sameSlice[T any](a, b []T) bool {
	return len(a) == len(b) && (len(a) == 0 || &a[0] == &b[0])
}
