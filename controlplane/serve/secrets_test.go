package serve_test

import (
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// identities records what the server tells them.
type identities struct {
	mu        sync.Mutex
	connected map[string]int
	roots     []string
}

func (i *identities) Connected(svc, _ string) { i.add(svc, 1) }
func (i *identities) Disconnected(svc, _ string) {
	i.add(svc, -1)
}
func (i *identities) add(svc string, n int) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.connected[svc] += n
}
func (i *identities) RootsChanged(root string) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.roots = append(i.roots, root)
}
func (i *identities) count(svc string) int {
	i.mu.Lock()
	defer i.mu.Unlock()
	return i.connected[svc]
}

// TestEnvoysGetTheirServicesLeafAsSDSSecrets: with MTLS on, an Envoy's
// snapshot carries its own service's leaf and Consul's roots, never
// another service's; a new leaf or new roots reach it; the identities
// learn which services have Envoys connected and when the roots change.
func TestEnvoysGetTheirServicesLeafAsSDSSecrets(t *testing.T) {
	cfg := translate.DefaultConfig()
	cfg.MTLS = true
	ids := &identities{connected: map[string]int{}}
	h := start(t, cfg, func(o *serve.Options) { o.Identities = ids })
	shop := newShop()
	apply := func(roots ...string) {
		snap := shop.snapshot()
		snap.CA = catalog.CA{TrustDomain: "a1.consul", RootPEMs: roots}
		h.srv.Apply(snap, time.Now())
	}
	apply("root-1")
	secrets := []string{translate.SecretIdentity, translate.SecretRoots}
	order := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Secrets: secrets})
	payment := envoysim.StartT(t, h.addr, envoysim.Options{ID: "payment-1", Cluster: "payment", Secrets: secrets})
	poll.Until(t, wait, func() (bool, string) {
		return ids.count("order") == 1 && ids.count("payment") == 1, "both services connected"
	})

	h.srv.SetLeaf(serve.Leaf{Service: "order", CertPEM: "order-cert-1", KeyPEM: "order-key-1", Serial: "1"})
	leafOf := func(s envoysim.State) string {
		return s.Secrets[translate.SecretIdentity].GetTlsCertificate().GetCertificateChain().GetInlineString()
	}
	rootsOf := func(s envoysim.State) string {
		return s.Secrets[translate.SecretRoots].GetValidationContext().GetTrustedCa().GetInlineString()
	}
	order.Must(t, wait, "order's leaf", func(s envoysim.State) bool { return leafOf(s) == "order-cert-1" && rootsOf(s) == "root-1" })

	h.srv.SetLeaf(serve.Leaf{Service: "order", CertPEM: "order-cert-2", KeyPEM: "order-key-2", Serial: "2"})
	order.Must(t, wait, "order's new leaf", func(s envoysim.State) bool { return leafOf(s) == "order-cert-2" })
	apply("root-2", "root-1")
	order.Must(t, wait, "the new roots", func(s envoysim.State) bool { return rootsOf(s) == "root-2\nroot-1" })
	if !slices.Equal(ids.roots, []string{"root-1", "root-2"}) {
		t.Errorf("RootsChanged calls: %v, want root-1 then root-2", ids.roots)
	}
	for _, r := range payment.History() {
		if r.TypeURL == "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret" && len(r.Names) > 0 {
			t.Errorf("payment, which has no leaf yet, received secrets %v", r.Names)
		}
	}
	payment.Close()
	poll.Until(t, wait, func() (bool, string) { return ids.count("payment") == 0, "payment disconnected" })
}
