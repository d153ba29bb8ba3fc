package serve

import (
	"slices"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// sharedSet keeps the translate.Shared of every meshed service, with its
// entries: each shared resource is validated, hashed and compacted once
// per change of its service, not once per node that calls it.
type sharedSet struct {
	byName map[string]*sharedEntries
	// shared is the Shared of every service, by name, for translate's
	// gatherings.
	shared map[string]*translate.Shared
	// proxyless is set once a gRPC client has asked for its
	// configuration: until then no service keeps proxyless resources,
	// which are about as large as the Envoy ones. refreshAll makes the
	// next update rebuild every service (to add them).
	proxyless, refreshAll bool
}

// enableProxyless makes every service keep its proxyless resources from
// the next update on.
func (s *sharedSet) enableProxyless() { s.proxyless, s.refreshAll = true, true }

// flavors are the flavours the services' resources are kept in.
func (s *sharedSet) flavors() []string {
	if s.proxyless {
		return translate.Flavors
	}
	return []string{""}
}

// sharedEntries is one service's Shared and the entries of its parts,
// by flavour and type. version changes whenever one of them does: it is
// part of the snapshot key of every node that references the service.
type sharedEntries struct {
	shared  *translate.Shared
	parts   [2]typedEntries // by flavour (flavorIndex)
	version string
}

// typedEntries are entries by type, in snapshotTypes' order: arrays, not
// maps, because every service keeps them (a map of four costs more than
// the entries' pointers).
type typedEntries [4][]*entry

// of returns the entries of a flavour (nil when it is not kept).
func (se *sharedEntries) of(flavor string) *typedEntries { return &se.parts[flavorIndex(flavor)] }

// flavorIndex is the index of a flavour in sharedEntries.parts.
func flavorIndex(flavor string) int {
	if flavor == translate.FlavorProxyless {
		return 1
	}
	return 0
}

func newSharedSet() *sharedSet {
	return &sharedSet{byName: map[string]*sharedEntries{}, shared: map[string]*translate.Shared{}}
}

// update translates again, under cfg, the services m replaced
// (ch.Services), forgets
// those m no longer has, and records in ch the ones whose shared
// configuration changed. It returns the services whose version changed:
// the nodes that reference them need a new snapshot.
func (s *sharedSet) update(m *model.Mesh, cfg translate.Config, ch *translate.Changes) (changed []string) {
	names := ch.Services
	if s.refreshAll {
		s.refreshAll = false
		names = slices.Concat(names, slices.Collect(m.Services.Keys()))
		slices.Sort(names)
		names = slices.Compact(names)
	}
	for _, name := range names {
		prev := s.byName[name]
		var prevShared *translate.Shared
		if prev != nil {
			prevShared = prev.shared
		}
		reuse := prevShared
		if s.proxyless && prev != nil && prevShared.GRPC == nil {
			reuse = nil // built without its proxyless resources: build them
		}
		svc := m.Service(name)
		if svc == nil {
			delete(s.byName, name)
			delete(s.shared, name)
			ch.SharedChanged(prevShared, nil)
			changed = append(changed, name)
			continue
		}
		sh := translate.Upstream(svc, cfg.TrustDomain(m), reuse)
		ch.SharedChanged(prevShared, sh)
		sameConfig := prev != nil && prevShared.Config == sh.Config
		se := &sharedEntries{shared: sh}
		fp := newFP()
		for _, flavor := range s.flavors() {
			p := sh.Parts(flavor).ByType()
			es := se.of(flavor)
			for i, typ := range snapshotTypes {
				// Only load assignments change when the configuration
				// did not.
				if sameConfig && typ != resource.EndpointType {
					es[i] = prev.of(flavor)[i]
				} else {
					es[i] = newEntries(p[typ])
				}
				for _, e := range es[i] {
					fp.add(e.name, e.hash)
				}
			}
		}
		se.version = fp.sum()
		se.keepCompact(sameConfig)
		s.byName[name] = se
		s.shared[name] = sh
		if prev == nil || prev.version != se.version {
			changed = append(changed, name)
		}
	}
	return changed
}

// keepCompact makes the Shared hold the compact forms of its resources
// (those of its entries) instead of the trees translation built: nothing
// reads more of them than names and bytes, and full trees of every
// service's load assignments, in both flavours, would stay in memory for
// as long as the service does. When the configuration was reused
// (sameConfig), its resources are already the previous, compact ones.
func (se *sharedEntries) keepCompact(sameConfig bool) {
	sh, sidecar, grpc := se.shared, se.of(""), se.of(translate.FlavorProxyless)
	sh.Endpoints = compactForms[*endpointv3.ClusterLoadAssignment](sidecar.ofType(resource.EndpointType))
	sh.GRPCEndpoints = nil
	kept := grpc.ofType(resource.ListenerType) != nil // every service has its API listener
	if kept {
		sh.GRPCEndpoints = compactForms[*endpointv3.ClusterLoadAssignment](grpc.ofType(resource.EndpointType))
	}
	if sameConfig {
		return
	}
	cfg := *sh.Config
	cfg.Clusters = compactForms[*clusterv3.Cluster](sidecar.ofType(resource.ClusterType))
	sh.Config = &cfg
	sh.GRPC = nil // not kept (no gRPC client yet)
	if !kept {
		return
	}
	sh.GRPC = &translate.GRPCConfig{
		Listener: compactForms[*listenerv3.Listener](grpc.ofType(resource.ListenerType))[0],
		Route:    compactForms[*routev3.RouteConfiguration](grpc.ofType(resource.RouteType))[0],
		Clusters: compactForms[*clusterv3.Cluster](grpc.ofType(resource.ClusterType)),
	}
}

// compactForms are the resources of es, as type T.
func compactForms[T cachetypes.Resource](es []*entry) []T {
	out := make([]T, len(es))
	for i, e := range es {
		out[i] = e.res.(T)
	}
	return out
}

// ofType returns the entries of a type.
func (t *typedEntries) ofType(typ resource.Type) []*entry {
	return t[slices.Index(snapshotTypes, typ)]
}
