package serve

import (
	"context"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdsauth"
)

// Envoys' workload identity, served as SDS secrets in each node's own
// snapshot (with MTLS on and a trust domain known):
//
//	Envoy stream (token) ──Connected(service, token)──▶ Identities (package identity)
//	                                                       │ leaf of the service, fetched
//	                                                       ▼ with a connected node's token
//	snapshot of every node of the service ◀──SetLeaf── mesh_identity (leaf + key)
//	                                                   mesh_roots (Consul's roots, from the catalog)
//
// The instances of a service share one leaf; the edge's is the edge
// identity's. Proxyless nodes get none: their kit writes its own leaf to
// files for gRPC's file_watcher. A node of a service with no leaf yet
// gets its snapshot without secrets, and Envoy waits for them before its
// TLS listeners and clusters warm.

// Identities issue the leaf certificates of services whose Envoys are
// connected.
type Identities interface {
	// Connected: a stream of an Envoy of service opened, authenticated
	// with token. Disconnected: it closed.
	Connected(service, token string)
	Disconnected(service, token string)
	// RootsChanged: the Connect CA's active root is now activeRootPEM.
	RootsChanged(activeRootPEM string)
}

// Leaf is a service's leaf certificate and private key (PEM).
type Leaf struct {
	Service, CertPEM, KeyPEM, Serial string
}

// SetLeaf makes l its service's leaf and rebuilds the snapshots of the
// service's Envoys.
func (s *Server) SetLeaf(l Leaf) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.leaves[l.Service]; ok && old == l {
		return
	}
	s.leaves[l.Service] = l
	if s.mesh == nil {
		return
	}
	for key, st := range s.snaps.nodes {
		if s.identityOf(st, st.opts) == l.Service {
			s.build(key, time.Time{}, false)
		}
	}
}

// identityOf is the service whose secrets node st gets, "" for none.
// Callers hold mu.
func (s *Server) identityOf(st *nodeState, opts translate.Node) string {
	if s.mesh == nil || s.opts.Translate.TrustDomain(s.mesh) == "" || opts.Flavor == translate.FlavorProxyless {
		return ""
	}
	if st.edge {
		return xdsauth.EdgeService
	}
	if in := s.mesh.Instance(st.key); in != nil {
		return in.Service
	}
	return ""
}

// secretsOf are the secret entries of a node of service (none without a
// leaf) and their fingerprint, part of the node's snapshot key. Callers
// hold mu.
func (s *Server) secretsOf(service string) ([]*entry, string) {
	leaf, ok := s.leaves[service]
	if service == "" || !ok {
		return nil, ""
	}
	roots := strings.Join(s.mesh.RootPEMs, "\n")
	fp := newFP()
	fp.add(leaf.Serial, roots)
	return []*entry{
		newEntry(&tlsv3.Secret{Name: translate.SecretIdentity, Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline(leaf.CertPEM),
			PrivateKey:       inline(leaf.KeyPEM),
		}}}),
		newEntry(&tlsv3.Secret{Name: translate.SecretRoots, Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
			TrustedCa: inline(roots),
		}}}),
	}, fp.sum()
}

func inline(s string) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
}

// rootsChanged tells the identities about a new active root. Callers
// hold mu.
func (s *Server) rootsChanged(prev, next []string) {
	if s.opts.Identities == nil || len(next) == 0 || (len(prev) > 0 && prev[0] == next[0]) {
		return
	}
	s.opts.Identities.RootsChanged(next[0])
}

// envoyStreams follows which authenticated Envoy streams are open, per
// service, for the identities: a leaf is fetched with the token of a
// connected node of its service.
type envoyStreams struct {
	mu      sync.Mutex
	tokens  map[streamKey]string                    // from the stream's context (xdsauth)
	holders map[streamKey]struct{ svc, tok string } // streams told to Identities
}

// opened records a stream's token ("" on a server without xdsauth:
// the identities then use their own).
func (e *envoyStreams) opened(ctx context.Context, k streamKey) {
	tok, _ := xdsauth.TokenOf(ctx)
	e.mu.Lock()
	e.tokens[k] = tok
	e.mu.Unlock()
}

// identified tells ids that the stream's node, an Envoy of its cluster,
// connected.
func (e *envoyStreams) identified(ids Identities, k streamKey, node *corev3.Node) {
	if ids == nil || node.GetMetadata().GetFields()[translate.MetaFlavor].GetStringValue() == translate.FlavorProxyless {
		return
	}
	e.mu.Lock()
	tok, ok := e.tokens[k]
	if ok {
		e.holders[k] = struct{ svc, tok string }{node.GetCluster(), tok}
	}
	e.mu.Unlock()
	if ok {
		ids.Connected(node.GetCluster(), tok)
	}
}

// closed forgets a stream.
func (e *envoyStreams) closed(ids Identities, k streamKey) {
	e.mu.Lock()
	h, ok := e.holders[k]
	delete(e.holders, k)
	delete(e.tokens, k)
	e.mu.Unlock()
	if ok && ids != nil {
		ids.Disconnected(h.svc, h.tok)
	}
}
