package serve

import (
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
}

// sharedEntries is one service's Shared and the entries of its parts,
// by flavour and type. version changes whenever one of them does: it is
// part of the snapshot key of every node that references the service.
type sharedEntries struct {
	shared  *translate.Shared
	parts   map[string]map[resource.Type][]*entry
	version string
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
		sameConfig := prev != nil && prevShared.Config == sh.Config
		if !sameConfig {
			// Callers embed the virtual host in their route
			// configurations: keep it compact there too.
			cfg := *sh.Config
			cfg.VirtualHost = compactVirtualHost(cfg.VirtualHost)
			sh.Config = &cfg
		}
		se := &sharedEntries{shared: sh, parts: map[string]map[resource.Type][]*entry{}}
		fp := newFP()
		for _, flavor := range translate.Flavors {
			p := sh.Parts(flavor).ByType()
			es := map[resource.Type][]*entry{}
			for _, typ := range snapshotTypes {
				// Only load assignments change when the configuration
				// did not.
				if sameConfig && typ != resource.EndpointType {
					es[typ] = prev.parts[flavor][typ]
				} else {
					es[typ] = newEntries(p[typ])
				}
				for _, e := range es[typ] {
					fp.add(e.name, e.hash)
				}
			}
			se.parts[flavor] = es
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
