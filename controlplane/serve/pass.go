package serve

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	connected := s.tracker.connectedKeys()
	changed := s.pass(m, seen, connected)
	s.tracker.setMesh(m, changed)
}

// pass makes m the current mesh: it translates again the Shared of the
// services m replaced, then visits the keys that read something that
// changed (what their last gathering reported), the instances that
// appeared or went, and the keys left pending by an earlier pass. It
// returns the IDs of the instances that appeared, went or changed.
func (s *Server) pass(m *model.Mesh, seen time.Time, connected map[string]bool) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	start := time.Now()
	ch := translate.Changed(s.mesh, m)
	s.mesh = m
	s.shared.update(m, ch)

	keys := s.snaps.readersOf(ch.Reads)
	keys = append(keys, ch.Instances...)
	if len(s.snaps.nodes) == 0 {
		keys = append(keys, edgeKey) // the first pass: the edge has read nothing yet
	}
	keys = append(keys, sortedKeys(s.snaps.pending)...)

	var set, failed, visited int
	done := make(map[string]bool, len(keys))
	for _, key := range keys {
		if done[key] {
			continue
		}
		done[key] = true
		visited++
		if key != edgeKey && m.Instance(key) == nil {
			s.forget(key, connected[key])
			continue
		}
		if key == edgeKey && m.Instance(key) != nil {
			s.log.Error("instance ID collides with the edge snapshot key; its sidecar gets no configuration", "node", key)
		}
		if ok, err := s.build(key, seen); ok {
			set++
		} else if err != nil {
			failed++
		}
	}
	s.ready = true
	s.log.Debug("pass done", "index", m.Index, "visited", visited, "set", set, "failed", failed, "took", time.Since(start).String())
	return ch.Instances
}

// forget drops the snapshot of an instance that left the catalog, once
// its Envoy is gone: while it is connected it keeps its last
// configuration, and every pass looks at it again.
func (s *Server) forget(key string, connected bool) {
	if connected {
		s.snaps.pending[key] = true
		return
	}
	if st := s.snaps.nodes[key]; st != nil {
		s.snaps.drop(st)
		s.cache.ClearSnapshot(key)
	}
	delete(s.snaps.pending, key)
	delete(s.meta, key)
}

// build rebuilds the snapshot of one key if what it is built from
// changed. It reports whether a snapshot was set, and the error that
// prevented it.
func (s *Server) build(key string, seen time.Time) (set bool, err error) {
	m := s.mesh
	st := s.snaps.nodes[key]
	if st == nil {
		st = &nodeState{key: key, edge: key == edgeKey}
		s.snaps.nodes[key] = st
	}
	opts := translate.Node{ID: key}
	if meta, ok := s.meta[key]; ok {
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

	var inputs interface{ Key() string }
	var upstreams []translate.UpstreamRef
	if st.edge {
		in, reads := translate.EdgeInputsOf(m, s.opts.Translate, s.shared.lookup)
		s.snaps.index(st, reads)
		inputs, upstreams = in, in.Upstreams
	} else {
		in, reads, err := translate.SidecarInputsOf(m, opts, s.opts.Translate, s.shared.lookup)
		s.snaps.index(st, reads)
		if err != nil {
			s.fail(st, "translate", err)
			return false, err
		}
		inputs, upstreams = in, in.Upstreams
	}
	inputsKey := inputs.Key()
	shared := make([]*sharedEntries, len(upstreams))
	fp := newFP()
	fp.add(inputsKey)
	for i, u := range upstreams {
		shared[i] = s.shared.byName[u.Name]
		fp.add(u.Name, shared[i].version)
	}
	snapshotKey := fp.sum()
	if snapshotKey == st.snapshotKey && st.lastErr == "" && st.group != nil {
		st.opts = opts
		return false, nil // nothing this node is built from changed
	}

	g := s.snaps.groups[snapshotKey]
	if g == nil {
		g = &group{key: snapshotKey, inputsKey: inputsKey}
		if old := st.group; old != nil && old.inputsKey == inputsKey {
			g.own, g.upstreams = old.own, old.upstreams
		} else {
			var nc *translate.NodeConfig
			switch in := inputs.(type) {
			case *translate.EdgeInputs:
				nc = translate.Edge(in)
			case *translate.SidecarInputs:
				nc = translate.Sidecar(in)
			}
			g.own, g.upstreams = ownEntries(s.snaps.pool, nc), nc.Upstreams
		}
		shared = shared[:0]
		for _, name := range g.upstreams {
			shared = append(shared, s.shared.byName[name])
		}
		g.snapshot, g.versions, err = assemble(g.own, shared)
		if err != nil {
			s.fail(st, "validate", err)
			return false, err
		}
		s.snaps.groups[snapshotKey] = g
	}
	if err := s.cache.SetSnapshot(context.Background(), key, g.snapshot); err != nil {
		if g.refs == 0 {
			delete(s.snaps.groups, snapshotKey)
		}
		s.fail(st, "set", err)
		return false, err
	}
	if st.lastErr != "" {
		s.log.Info("node configuration builds again", "node", key, "was", st.lastErr)
	}
	s.snaps.use(st, g)
	st.opts = opts
	st.snapshotKey = snapshotKey
	st.setAt = time.Now()
	st.builds++
	st.lastErr = ""
	delete(s.snaps.pending, key)
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
