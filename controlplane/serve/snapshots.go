package serve

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// edgeKey is the one snapshot key every edge node shares.
const edgeKey = "edge"

// The xDS types every snapshot carries, in the order Envoy needs them;
// the snapshot of a node with an identity carries secrets too (see
// secrets.go).
var (
	snapshotTypes = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}
	withSecrets   = append(slices.Clone(snapshotTypes), resource.SecretType)
)

// snapshots is the build state of every cache key: what each was last
// built from, the snapshot groups they share, and which keys read which
// part of the mesh. The server's mu guards it.
type snapshots struct {
	nodes  map[string]*nodeState
	groups map[string]*group
	// readers maps a read key (translate.Reads) to the cache keys whose
	// last gathering read it; referencers maps a service to the keys
	// whose snapshot holds its Shared.
	readers     map[string]map[string]bool
	referencers map[string]map[string]bool
	// pending are keys every pass visits again: builds that failed, and
	// instances that left while their Envoy was still connected.
	pending map[string]bool
	pool    *entryPool
}

func newSnapshots() *snapshots {
	return &snapshots{
		nodes:       map[string]*nodeState{},
		groups:      map[string]*group{},
		readers:     map[string]map[string]bool{},
		referencers: map[string]map[string]bool{},
		pending:     map[string]bool{},
		pool:        newEntryPool(),
	}
}

// keysOf returns the keys index holds for any of names.
func keysOf(index map[string]map[string]bool, names []string) []string {
	var out []string
	for _, n := range names {
		for key := range index[n] {
			out = append(out, key)
		}
	}
	return out
}

// index records what a node's gathering read.
func (s *snapshots) index(st *nodeState, reads translate.Reads) {
	if slices.Equal(st.reads, reads) {
		return
	}
	unlink(s.readers, st.reads, st.key)
	link(s.readers, reads, st.key)
	st.reads = reads
}

func link(index map[string]map[string]bool, names []string, key string) {
	for _, n := range names {
		keys := index[n]
		if keys == nil {
			keys = map[string]bool{}
			index[n] = keys
		}
		keys[key] = true
	}
}

func unlink(index map[string]map[string]bool, names []string, key string) {
	for _, n := range names {
		delete(index[n], key)
		if len(index[n]) == 0 {
			delete(index, n)
		}
	}
}

// use makes g the node's snapshot group.
func (s *snapshots) use(st *nodeState, g *group) {
	if st.group == g {
		return
	}
	s.release(st)
	g.refs++
	st.group = g
	link(s.referencers, g.upstreams, st.key)
}

// release drops a node's reference to its snapshot group; the last
// reference frees it.
func (s *snapshots) release(st *nodeState) {
	if st.group == nil {
		return
	}
	unlink(s.referencers, st.group.upstreams, st.key)
	st.group.refs--
	if st.group.refs <= 0 {
		delete(s.groups, st.group.key)
	}
	st.group = nil
}

// drop forgets a node.
func (s *snapshots) drop(st *nodeState) {
	s.release(st)
	unlink(s.readers, st.reads, st.key)
	delete(s.nodes, st.key)
	delete(s.pending, st.key)
}

// nodeState is what was last built for one cache key.
type nodeState struct {
	key  string
	edge bool
	opts translate.Node
	// reads are what the last gathering of the node's inputs read.
	reads translate.Reads
	// snapshotKey identifies what the node's snapshot is built from: the
	// key of its inputs and the versions of the Shared it references.
	snapshotKey string
	// group is the snapshot set last, shared with every node built from
	// the same inputs.
	group *group
	setAt time.Time
	// builds counts snapshots set for this key.
	builds int
	// lastErr is why the last build was not set (the previous snapshot,
	// if any, stays in force).
	lastErr string
}

// group is one built snapshot and what it was built from. Every node with
// the same snapshot key shares it: the instances of a service have equal
// inputs, as nothing in a sidecar's resources depends on its ID. A group
// is immutable; refs counts the nodes using it.
type group struct {
	key string
	// inputsKey is the key of the inputs own was translated from.
	inputsKey string
	// own are the node's own resources by type; upstreams the services
	// whose Shared complete them (what translation returned).
	own       map[resource.Type][]*entry
	upstreams []string
	// flavor says which of the Shared's resources the snapshot holds.
	flavor   string
	snapshot *cachev3.Snapshot
	versions map[resource.Type]string
	refs     int
	// bytes is the size of its resources, encoded.
	bytes int
}

// groupBytes is the encoded size of a snapshot's resources.
func groupBytes(own map[resource.Type][]*entry, shared []*sharedEntries, flavor string, secrets []*entry) int {
	n := 0
	add := func(es []*entry) {
		for _, e := range es {
			n += e.size
		}
	}
	for _, es := range own {
		add(es)
	}
	for _, sh := range shared {
		for _, es := range sh.of(flavor) {
			add(es)
		}
	}
	add(secrets)
	return n
}

// SnapshotStatus is the debug view of a node's snapshot.
type SnapshotStatus struct {
	Key      string            `json:"key"`
	Versions map[string]string `json:"versions,omitempty"`
	SetAt    *time.Time        `json:"set_at,omitempty"`
	Builds   int               `json:"builds"`
	Error    string            `json:"error,omitempty"`
	Problems model.Problems    `json:"problems,omitempty"`
}

// ownEntries makes the entries of what translation returned for a node:
// its own resources, shared with identical ones of other nodes.
func ownEntries(pool *entryPool, nc *translate.NodeConfig) map[resource.Type][]*entry {
	return map[resource.Type][]*entry{
		resource.ClusterType:  entries(pool, nc.Clusters),
		resource.ListenerType: entries(pool, nc.Listeners),
		resource.RouteType:    entries(pool, nc.Routes),
	}
}

// assemble builds the cache snapshot of a node from its own entries and
// those of the Shared it references. Each type's version is a hash of its
// resources' names and hashes (secrets: the node's identity, see
// secrets.go), so a type whose content did not change
// keeps its version and is not pushed again; the delta version map is
// filled from the same hashes, so the cache never marshals a resource
// again to compute it.
//
// Every snapshot set has passed validation and the consistency check.
func assemble(own map[resource.Type][]*entry, shared []*sharedEntries, flavor string, secrets []*entry) (*cachev3.Snapshot, map[resource.Type]string, error) {
	types := snapshotTypes
	if len(secrets) > 0 {
		types = withSecrets
	}
	byType := map[resource.Type][]*entry{resource.SecretType: secrets}
	for _, typ := range snapshotTypes {
		byType[typ] = slices.Clone(own[typ])
	}
	for _, s := range shared {
		for i, es := range s.of(flavor) {
			byType[snapshotTypes[i]] = append(byType[snapshotTypes[i]], es...)
		}
	}
	for _, typ := range types {
		slices.SortFunc(byType[typ], func(a, b *entry) int { return strings.Compare(a.name, b.name) })
	}
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	versions := map[resource.Type]string{}
	var errs []error
	for _, typ := range types {
		es := byType[typ]
		items := make(map[string]cachetypes.ResourceWithTTL, len(es))
		vm := make(map[string]string, len(es))
		h := newFP()
		for _, e := range es {
			if e.err != nil {
				errs = append(errs, fmt.Errorf("%s %q: %w", shortType(typ), e.name, e.err))
			}
			if _, dup := items[e.name]; dup {
				errs = append(errs, fmt.Errorf("%s %q: defined twice", shortType(typ), e.name))
			}
			items[e.name] = cachetypes.ResourceWithTTL{Resource: e.res}
			vm[e.name] = e.hash
			h.add(e.name, e.hash)
		}
		v := h.sum()
		versions[typ] = v
		snap.Resources[cachev3.GetResponseType(typ)] = cachev3.Resources{Version: v, Items: items}
		snap.VersionMap[typ] = vm
	}
	if err := errors.Join(errs...); err != nil {
		return nil, nil, fmt.Errorf("validation: %w", err)
	}
	if err := consistent(byType); err != nil {
		return nil, nil, fmt.Errorf("consistency: %w", err)
	}
	return snap, versions, nil
}

// consistent is go-control-plane's Snapshot.Consistent on the references
// the entries recorded (compact resources no longer show them): every
// load assignment is named by exactly the clusters' references and every
// route configuration by the listeners'.
func consistent(byType map[resource.Type][]*entry) error {
	for _, dep := range [...]struct{ from, to resource.Type }{
		{resource.ClusterType, resource.EndpointType},
		{resource.ListenerType, resource.RouteType},
	} {
		refs := map[string]bool{}
		for _, e := range byType[dep.from] {
			for _, n := range e.refs {
				refs[n] = true
			}
		}
		have := byType[dep.to]
		if len(refs) != len(have) {
			return fmt.Errorf("mismatched %q reference and resource lengths: len(%v) != %d", dep.to, slices.Sorted(maps.Keys(refs)), len(have))
		}
		for _, e := range have {
			if !refs[e.name] {
				return fmt.Errorf("inconsistent %q reference: %q not listed", dep.to, e.name)
			}
		}
	}
	return nil
}

func shortType(t resource.Type) string {
	return t[strings.LastIndex(t, ".")+1:]
}

func versionsJSON(v map[resource.Type]string) map[string]string {
	out := make(map[string]string, len(v))
	for k, x := range v {
		out[shortType(k)] = x
	}
	return out
}
