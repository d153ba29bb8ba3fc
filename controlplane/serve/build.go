package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"slices"
	"strings"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// edgeKey is the one snapshot key every edge node shares.
const edgeKey = "edge"

// The xDS types every snapshot carries, in the order Envoy needs them.
var snapshotTypes = []resource.Type{resource.ClusterType, resource.EndpointType, resource.ListenerType, resource.RouteType}

// entry is one resource with what serve computed about it once: its
// content hash (its delta version and part of its type's version),
// whether it passed validation, and the names it references (a cluster's
// load assignment, a listener's route configurations). res is the
// compact form of the resource (see compact): the full tree is dropped
// once these are known.
type entry struct {
	name string
	res  cachetypes.Resource
	hash string
	refs []string
	err  error
}

func newEntry(r cachetypes.Resource) *entry {
	e := &entry{name: cachev3.GetResourceName(r), res: r, refs: references(r)}
	if err := translate.Validate(r); err != nil {
		e.err = err
	}
	b, err := cachev3.MarshalResource(r)
	if err != nil {
		e.err = errors.Join(e.err, fmt.Errorf("marshal: %w", err))
		return e
	}
	e.hash = cachev3.HashResource(b)[:16]
	if c, err := compact(r, b); err != nil {
		e.err = errors.Join(e.err, err)
	} else {
		e.res = c
	}
	return e
}

// references are the names of the resources r needs in the same
// snapshot, as go-control-plane's Snapshot.Consistent finds them.
func references(r cachetypes.Resource) []string {
	var out []string
	for _, names := range cachev3.GetResourceReferences(map[string]cachetypes.ResourceWithTTL{"": {Resource: r}}) {
		for n := range names {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return out
}

// nodeState is what was last built for one cache key.
type nodeState struct {
	key      string
	edge     bool
	opts     translate.Node
	configFP string
	epFP     string
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

// group is one built snapshot and what it was built from. Every node whose
// configuration and endpoint fingerprints are the same shares it: the
// instances of a service differ only in their ID, which nothing in a
// sidecar's resources depends on. A group is immutable; refs counts the
// nodes using it.
type group struct {
	key      string
	configFP string
	// config holds clusters, listeners, routes; endpoints the load
	// assignments.
	config    map[resource.Type][]*entry
	endpoints []*entry
	snapshot  *cachev3.Snapshot
	versions  map[resource.Type]string
	refs      int
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

// upstreamMemo implements translate.Upstreams, sharing one set of
// clusters and load assignments per service (and config/endpoint hash)
// between every node that calls it. Each resource is validated and
// hashed once, here, not once per node. It keeps the latest version per
// service: a new hash replaces the old entries (nodes keep their own
// references to what they serve).
type upstreamMemo struct {
	clusters  map[string]memoEntry // by service name
	endpoints map[string]memoEntry
	vhosts    map[string]vhostEntry
	byRes     map[cachetypes.Resource]*entry
	// nodeOwn holds the entries of nodes' own resources by type, name
	// and hash, weakly: identical resources of different services (the
	// otel_collector cluster every sidecar has, a local_app cluster or an
	// inbound route with the same port and policy) share one entry.
	nodeOwn map[string]weak.Pointer[entry]
	// liveOwn is how many nodeOwn entries were alive at the last sweep.
	liveOwn int
}

type vhostEntry struct {
	key string
	vh  *routev3.VirtualHost
}

func (u *upstreamMemo) VirtualHost(svc *model.Service) *routev3.VirtualHost {
	if e, ok := u.vhosts[svc.Name]; ok && e.key == svc.ConfigHash {
		return e.vh
	}
	vh := compactVirtualHost(translate.UpstreamVirtualHost(svc))
	u.vhosts[svc.Name] = vhostEntry{svc.ConfigHash, vh}
	return vh
}

// compactVirtualHost returns the compact form of a valid virtual host
// (callers' route configurations embed it and are validated without
// seeing inside it), or vh itself when it is invalid, so that every
// route configuration embedding it fails validation as it should.
func compactVirtualHost(vh *routev3.VirtualHost) *routev3.VirtualHost {
	if translate.Validate(vh) != nil {
		return vh
	}
	b, err := cachev3.MarshalResource(vh)
	if err != nil {
		return vh
	}
	c, err := compact(vh, b)
	if err != nil {
		return vh
	}
	return c.(*routev3.VirtualHost)
}

type memoEntry struct {
	key     string // the hashes the entries were built from
	entries []*entry
}

func newUpstreamMemo() *upstreamMemo {
	return &upstreamMemo{
		clusters:  map[string]memoEntry{},
		endpoints: map[string]memoEntry{},
		vhosts:    map[string]vhostEntry{},
		byRes:     map[cachetypes.Resource]*entry{},
		nodeOwn:   map[string]weak.Pointer[entry]{},
	}
}

// get returns the entries of svc in memo m for key, building them with
// build when the memo holds another version.
func (u *upstreamMemo) get(m map[string]memoEntry, name, key string, build func() []cachetypes.Resource) []*entry {
	if me, ok := m[name]; ok && me.key == key {
		return me.entries
	} else if ok {
		u.forget(me)
	}
	var es []*entry
	for _, r := range build() {
		e := newEntry(r)
		es = append(es, e)
		u.byRes[e.res] = e
	}
	m[name] = memoEntry{key: key, entries: es}
	return es
}

func (u *upstreamMemo) forget(me memoEntry) {
	for _, e := range me.entries {
		delete(u.byRes, e.res)
	}
}

func (u *upstreamMemo) Clusters(svc *model.Service) []*clusterv3.Cluster {
	es := u.get(u.clusters, svc.Name, svc.ConfigHash, func() []cachetypes.Resource {
		var out []cachetypes.Resource
		for _, c := range translate.UpstreamClusters(svc) {
			out = append(out, c)
		}
		return out
	})
	out := make([]*clusterv3.Cluster, len(es))
	for i, e := range es {
		out[i] = e.res.(*clusterv3.Cluster)
	}
	return out
}

func (u *upstreamMemo) Endpoints(svc *model.Service) []*endpointv3.ClusterLoadAssignment {
	es := u.get(u.endpoints, svc.Name, svc.ConfigHash+"|"+svc.EndpointsHash, func() []cachetypes.Resource {
		var out []cachetypes.Resource
		for _, c := range translate.UpstreamEndpoints(svc) {
			out = append(out, c)
		}
		return out
	})
	out := make([]*endpointv3.ClusterLoadAssignment, len(es))
	for i, e := range es {
		out[i] = e.res.(*endpointv3.ClusterLoadAssignment)
	}
	return out
}

// entry returns the memoized entry of a shared resource, or the entry of
// a node's own resource (the one already built for an identical resource,
// if any is still in use).
func (u *upstreamMemo) entry(r cachetypes.Resource) *entry {
	if e, ok := u.byRes[r]; ok {
		return e
	}
	e := newEntry(r)
	if e.err != nil {
		return e
	}
	key := string(r.ProtoReflect().Descriptor().FullName()) + "|" + e.name + "|" + e.hash
	if old := u.nodeOwn[key].Value(); old != nil {
		return old
	}
	u.nodeOwn[key] = weak.Make(e)
	if len(u.nodeOwn) > 2*u.liveOwn+64 {
		u.liveOwn = 0
		for k, w := range u.nodeOwn {
			if w.Value() == nil {
				delete(u.nodeOwn, k)
			} else {
				u.liveOwn++
			}
		}
	}
	return e
}

// sweep forgets the services that are no longer in the mesh.
func (u *upstreamMemo) sweep(m *model.Mesh) {
	for _, memo := range []map[string]memoEntry{u.clusters, u.endpoints} {
		for name, me := range memo {
			if m.Service(name) == nil {
				u.forget(me)
				delete(memo, name)
			}
		}
	}
	for name := range u.vhosts {
		if m.Service(name) == nil {
			delete(u.vhosts, name)
		}
	}
}

// fingerprint hashes the inputs of a node's configuration.
type fingerprint struct{ h hash.Hash }

func newFP() *fingerprint { return &fingerprint{sha256.New()} }

func (f *fingerprint) add(parts ...any) {
	for _, p := range parts {
		fmt.Fprint(f.h, p, "\x00")
	}
}

func (f *fingerprint) sum() string { return hex.EncodeToString(f.h.Sum(nil)[:12]) }

// sidecarFP returns the fingerprints of a sidecar's configuration and
// endpoints: everything translate.Sidecar reads, and nothing else, so an
// unrelated change leaves the node alone.
func sidecarFP(m *model.Mesh, in *model.Instance, opts translate.Node, cfgFP string) (config, endpoints string) {
	c, e := newFP(), newFP()
	svc := m.Service(in.Service)
	c.add(cfgFP, opts.InboundPort, opts.OutboundPort, in.AppPort, svc.ConfigHash, strings.Join(in.Upstreams, ","))
	for _, u := range in.Upstreams {
		us := m.Service(u)
		c.add(u, us.ConfigHash)
		e.add(u, us.ConfigHash, us.EndpointsHash)
	}
	return c.sum(), e.sum()
}

func edgeFP(m *model.Mesh, cfgFP string) (config, endpoints string) {
	c, e := newFP(), newFP()
	c.add(cfgFP)
	for _, r := range m.Routes {
		c.add(r.Prefix, r.Service)
	}
	// Only the services owning a route: not every service.
	for _, name := range m.PublicServices() {
		s := m.Service(name)
		c.add(name, s.ConfigHash)
		e.add(name, s.ConfigHash, s.EndpointsHash)
	}
	return c.sum(), e.sum()
}

func configFP(cfg translate.Config) string {
	f := newFP()
	f.add(fmt.Sprintf("%+v", cfg))
	return f.sum()
}

// assemble builds the cache snapshot of a node from its entries. Each
// type's version is a hash of its resources' names and hashes, so a type
// whose content did not change keeps its version and is not pushed again;
// the delta version map is filled from the same hashes, so the cache never
// marshals a resource again to compute it.
//
// Every snapshot set has passed validation and the consistency check.
func assemble(config map[resource.Type][]*entry, endpoints []*entry) (*cachev3.Snapshot, map[resource.Type]string, error) {
	byType := map[resource.Type][]*entry{
		resource.ClusterType:  config[resource.ClusterType],
		resource.EndpointType: endpoints,
		resource.ListenerType: config[resource.ListenerType],
		resource.RouteType:    config[resource.RouteType],
	}
	snap := &cachev3.Snapshot{VersionMap: map[string]map[string]string{}}
	versions := map[resource.Type]string{}
	var errs []error
	for _, typ := range snapshotTypes {
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
			return fmt.Errorf("mismatched %q reference and resource lengths: len(%v) != %d", dep.to, sortedKeys(refs), len(have))
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

func entriesOf(u *upstreamMemo, r *translate.Resources) map[resource.Type][]*entry {
	out := map[resource.Type][]*entry{}
	for typ, rs := range r.ByType() {
		if typ == resource.EndpointType {
			continue
		}
		for _, x := range rs {
			out[typ] = append(out[typ], u.entry(x))
		}
	}
	return out
}

func endpointEntries(u *upstreamMemo, cla []*endpointv3.ClusterLoadAssignment) []*entry {
	out := make([]*entry, 0, len(cla))
	for _, c := range cla {
		out = append(out, u.entry(c))
	}
	return out
}

func versionsJSON(v map[resource.Type]string) map[string]string {
	out := make(map[string]string, len(v))
	for k, x := range v {
		out[shortType(k)] = x
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
