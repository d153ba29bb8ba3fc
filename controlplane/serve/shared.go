package serve

import (
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// sharedSet keeps the translate.Shared of every meshed service, with its
// entries: each shared cluster and load assignment is validated, hashed
// and compacted once per change of its service, not once per node that
// calls it.
type sharedSet struct {
	byName map[string]*sharedEntries
	// shared is the Shared of every service, by name, for translate's
	// gatherings.
	shared map[string]*translate.Shared
}

// sharedEntries is one service's Shared and its entries. version changes
// whenever a cluster or a load assignment of it does: it is part of the
// snapshot key of every node that references the service.
type sharedEntries struct {
	shared    *translate.Shared
	clusters  []*entry
	endpoints []*entry
	// grpc are the proxyless flavour's entries, by type.
	grpc    map[resource.Type][]*entry
	version string
}

// of returns the entries a node of flavor holds, by type.
func (se *sharedEntries) of(flavor string) map[resource.Type][]*entry {
	if flavor == translate.FlavorProxyless {
		return se.grpc
	}
	return map[resource.Type][]*entry{resource.ClusterType: se.clusters, resource.EndpointType: se.endpoints}
}

func newSharedSet() *sharedSet {
	return &sharedSet{byName: map[string]*sharedEntries{}, shared: map[string]*translate.Shared{}}
}

// update translates again the services m replaced (ch.Services), forgets
// those m no longer has, and records in ch the ones whose shared
// configuration changed. It returns the services whose version changed:
// the nodes that reference them need a new snapshot.
func (s *sharedSet) update(m *model.Mesh, ch *translate.Changes) (changed []string) {
	for _, name := range ch.Services {
		prev := s.byName[name]
		var prevShared *translate.Shared
		if prev != nil {
			prevShared = prev.shared
		}
		svc := m.Service(name)
		if svc == nil {
			delete(s.byName, name)
			delete(s.shared, name)
			ch.SharedChanged(prevShared, nil)
			changed = append(changed, name)
			continue
		}
		sh := translate.Upstream(svc, prevShared)
		ch.SharedChanged(prevShared, sh)
		se := &sharedEntries{shared: sh, endpoints: newEntries(sh.Endpoints),
			grpc: map[resource.Type][]*entry{resource.EndpointType: newEntries(sh.GRPCEndpoints)}}
		if prev != nil && prevShared.Config == sh.Config {
			se.clusters = prev.clusters
			for _, typ := range []resource.Type{resource.ListenerType, resource.RouteType, resource.ClusterType} {
				se.grpc[typ] = prev.grpc[typ]
			}
		} else {
			// Callers embed the virtual host in their route
			// configurations: keep it compact there too.
			cfg := *sh.Config
			cfg.VirtualHost = compactVirtualHost(cfg.VirtualHost)
			sh.Config = &cfg
			se.clusters = newEntries(cfg.Clusters)
			se.grpc[resource.ListenerType] = newEntries([]*listenerv3.Listener{sh.GRPC.Listener})
			se.grpc[resource.RouteType] = newEntries([]*routev3.RouteConfiguration{sh.GRPC.Route})
			se.grpc[resource.ClusterType] = newEntries(sh.GRPC.Clusters)
		}
		fp := newFP()
		for _, es := range [][]*entry{se.clusters, se.endpoints} {
			for _, e := range es {
				fp.add(e.name, e.hash)
			}
		}
		for _, typ := range snapshotTypes {
			for _, e := range se.grpc[typ] {
				fp.add(e.name, e.hash)
			}
		}
		se.version = fp.sum()
		s.byName[name] = se
		s.shared[name] = sh
		if prev == nil || prev.version != se.version {
			changed = append(changed, name)
		}
	}
	return changed
}
