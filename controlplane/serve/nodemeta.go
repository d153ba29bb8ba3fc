package serve

import (
	"fmt"
	"math"
	"strconv"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// Node metadata keys a sidecar's Envoy bootstrap may set to move its
// listeners (numbers or numeric strings).
const (
	MetaInboundPort  = "inbound_port"
	MetaOutboundPort = "outbound_port"
	MetaExposePort   = "expose_port"
)

// nodeMeta is what one node's metadata asks for: its listener ports, or
// why the metadata was rejected (then the defaults are used).
type nodeMeta struct {
	opts    translate.Node
	problem string
}

// nodeSeen builds a node's snapshot on its first request (passes keep
// only the snapshots of nodes that asked), applying a sidecar's metadata
// before the cache answers it, so the Envoy never sees listeners on
// default ports it did not ask for.
func (s *Server) nodeSeen(n *corev3.Node) {
	if translate.IsEdge(n.GetCluster()) {
		return
	}
	meta := parseNodeMeta(n)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dropForgotten() // also between passes, so that churn cannot pile them up
	old, known := s.meta[n.GetId()]
	if meta.problem != "" && meta.problem != old.problem {
		s.log.Warn("envoy node metadata rejected; default listener ports are used", "node", n.GetId(),
			"metadata", metadataJSON(n), "err", meta.problem)
	}
	s.meta[n.GetId()] = meta
	if meta.opts.Flavor == translate.FlavorProxyless && !s.shared.proxyless {
		// The first gRPC client, even one whose instance is not
		// registered yet: every service gets its proxyless resources
		// from now on (a pass over the current mesh adds them).
		s.shared.enableProxyless()
		if s.mesh != nil { // otherwise the first pass does
			s.passLocked(s.mesh, time.Time{})
		}
	}
	if s.mesh == nil || s.mesh.Instance(n.GetId()) == nil {
		// No instance (yet): keep the metadata for when one registers,
		// but only while the Envoy is connected (see sweepMeta).
		s.metaOrphans[n.GetId()] = true
		return
	}
	st := s.snaps.nodes[n.GetId()]
	if st != nil && known && old.opts == meta.opts {
		return
	}
	if st != nil && st.opts == meta.opts && st.lastErr == "" && st.group != nil {
		return
	}
	s.build(n.GetId(), time.Time{}, true) // a node's first snapshot is built when it first asks
}

// parseNodeMeta reads the flavour of a node (mesh_flavor: proxyless for
// a gRPC client, absent for an Envoy) and the listener ports a sidecar
// asks for.
func parseNodeMeta(n *corev3.Node) nodeMeta {
	opts := translate.Node{ID: n.GetId()}
	fields := n.GetMetadata().GetFields()
	var problems []string
	flavor := ""
	if v, ok := fields[translate.MetaFlavor]; ok {
		if v.GetStringValue() == translate.FlavorProxyless {
			flavor = translate.FlavorProxyless
		} else {
			problems = append(problems, fmt.Sprintf("%s=%q is not %q (leave it out for an Envoy)", translate.MetaFlavor, v.AsInterface(), translate.FlavorProxyless))
		}
	}
	opts.Flavor = flavor
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
	opts.ExposePort = port(MetaExposePort)
	if len(problems) > 0 {
		return nodeMeta{opts: translate.Node{ID: n.GetId(), Flavor: flavor}, problem: fmt.Sprint(problems)}
	}
	return nodeMeta{opts: opts}
}

// metadataJSON renders node metadata for logs.
func metadataJSON(n *corev3.Node) string {
	if n.GetMetadata() == nil {
		return "{}"
	}
	b, _ := protojson.Marshal(n.GetMetadata())
	return string(b)
}

// sweepMeta forgets the metadata of nodes that have no instance and no
// open stream any more. It costs the number of such nodes, not the mesh.
func (s *Server) sweepMeta(m *model.Mesh) {
	for id := range s.metaOrphans {
		switch {
		case m.Instance(id) != nil:
			delete(s.metaOrphans, id)
		case !s.tracker.connected(id):
			delete(s.metaOrphans, id)
			if s.snaps.nodes[id] == nil {
				delete(s.meta, id)
			}
		}
	}
}
