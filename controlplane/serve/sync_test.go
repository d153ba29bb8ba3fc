package serve_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// gathered returns the metric of family name whose labels are labels
// (nil when there is none).
func gathered(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) *dto.Metric {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			if len(m.GetLabel()) != len(labels) {
				continue
			}
			for _, l := range m.GetLabel() {
				if labels[l.GetName()] != l.GetValue() {
					continue next
				}
			}
			return m
		}
	}
	return nil
}

func nodesGauge(t *testing.T, h *harness, sync, flavour string) float64 {
	t.Helper()
	m := gathered(t, h.reg, "meshop_controlplane_nodes", map[string]string{"sync": sync, "flavour": flavour})
	if m == nil {
		t.Fatalf("no meshop_controlplane_nodes{sync=%q,flavour=%q}", sync, flavour)
	}
	return m.GetGauge().GetValue()
}

func histogramOf(t *testing.T, h *harness, name string) (count uint64, sum float64) {
	t.Helper()
	m := gathered(t, h.reg, name, map[string]string{})
	if m == nil {
		t.Fatalf("no %s", name)
	}
	return m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
}

// TestSyncStates: a node that ACKs everything is SYNCED on every type it
// was sent, one that rejects its listeners is NACKED (on LDS and
// overall), and one that stops answering is SYNCED while the new version
// is younger than StaleAfter and STALE after; the nodes gauge counts
// them by state and flavour. The clock is the test's.
func TestSyncStates(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			clock := newTestClock()
			h := start(t, translate.DefaultConfig(), func(o *serve.Options) { o.StaleAfter = 5 * time.Second })
			h.srv.SetClockForTest(clock.now)
			sh := newShop()
			h.srv.Apply(sh.snapshot(), clock.now())

			envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta})
			rejectLDS := func(typeURL string, _ map[string]proto.Message) string {
				if typeURL == resource.ListenerType {
					return "listeners refused by the test"
				}
				return ""
			}
			envoysim.StartT(t, h.addr, envoysim.Options{ID: "user-1", Cluster: "user", Delta: delta, Reject: rejectLDS})

			synced := func(n serve.NodeStatus) bool {
				if n.Sync != serve.SyncSynced || len(n.SyncByType) != 4 {
					return false
				}
				for _, st := range n.SyncByType {
					if st != serve.SyncSynced {
						return false
					}
				}
				return true
			}
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("order-1")
				return synced(n), fmt.Sprintf("order-1 sync %s %v", n.Sync, n.SyncByType)
			})
			if n := h.node("order-1"); n.LastSeen == nil || !n.LastSeen.Equal(clock.now()) {
				t.Errorf("order-1 last_seen = %v, want %v", n.LastSeen, clock.now())
			}
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("user-1")
				return n.Sync == serve.SyncNacked && n.SyncByType[resource.ListenerType] == serve.SyncNacked &&
						n.SyncByType[resource.ClusterType] == serve.SyncSynced,
					fmt.Sprintf("user-1 sync %s %v", n.Sync, n.SyncByType)
			})
			if got := testutil.ToFloat64(h.metrics.Nacks.WithLabelValues(resource.ListenerType, "sidecar")); got < 1 {
				t.Errorf("NACKs{listener, sidecar} = %v", got)
			}
			if got := nodesGauge(t, h, serve.SyncSynced, "sidecar"); got != 1 {
				t.Errorf("nodes{SYNCED, sidecar} = %v, want 1", got)
			}
			if got := nodesGauge(t, h, serve.SyncNacked, "sidecar"); got != 1 {
				t.Errorf("nodes{NACKED, sidecar} = %v, want 1", got)
			}

			// A node that stops answering: payment-1 ACKs its first
			// clusters, then gets new ones (it calls user now) and does
			// not answer.
			p := openRaw(t, h.addr, "payment-1", "payment", delta)
			first := p.recv(t)
			p.ack(t, first)
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("payment-1")
				return n.SyncByType[resource.ClusterType] == serve.SyncSynced, fmt.Sprintf("payment-1 %v", n.SyncByType)
			})
			sh.set("payment-1", func(i *catalog.Instance) { i.Meta["mesh_upstreams"] = "user" })
			h.srv.Apply(sh.snapshot(), clock.now())
			second := p.recv(t)
			if second.version == first.version {
				t.Fatalf("no new cluster version: %s", second.version)
			}
			if n := h.node("payment-1"); n.SyncByType[resource.ClusterType] != serve.SyncSynced {
				t.Errorf("payment-1 with a push in flight (younger than StaleAfter): %v, want SYNCED", n.SyncByType)
			}
			clock.advance(6 * time.Second)
			if n := h.node("payment-1"); n.Sync != serve.SyncStale || n.SyncByType[resource.ClusterType] != serve.SyncStale {
				t.Errorf("payment-1 6s after an unanswered push: %s %v, want STALE", n.Sync, n.SyncByType)
			}
			if got := nodesGauge(t, h, serve.SyncStale, "sidecar"); got != 1 {
				t.Errorf("nodes{STALE, sidecar} = %v, want 1", got)
			}
			p.ack(t, second)
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("payment-1")
				return n.Sync == serve.SyncSynced, fmt.Sprintf("payment-1 after its ACK: %s %v", n.Sync, n.SyncByType)
			})
			// A disconnected node has no sync state.
			p.close()
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("payment-1")
				return !n.Connected && n.Sync == "" && n.SyncByType == nil, fmt.Sprintf("payment-1 gone: %+v", n)
			})
		})
	}
}

// TestConvergenceAndConfigSize: a change seen in Consul 250ms (by the
// test's clock) before the pass is observed, for every connected node
// whose types it changed, as a convergence of 250ms once the node ACKs
// it; each snapshot set observes its encoded size.
func TestConvergenceAndConfigSize(t *testing.T) {
	clock := newTestClock()
	h := start(t, translate.DefaultConfig())
	h.srv.SetClockForTest(clock.now)
	sh := newShop()
	h.srv.Apply(sh.snapshot(), clock.now())
	e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order"})
	e.Must(t, wait, "config", func(s envoysim.State) bool { return len(s.Endpoints) == 3 })
	// The edge's snapshot (built by the pass) and order-1's (built when
	// it asked), each a few KiB.
	count, sum := histogramOf(t, h, "meshop_controlplane_node_config_bytes")
	if count != 2 || sum/float64(count) < 1000 {
		t.Errorf("node_config_bytes: %d observations, sum %v", count, sum)
	}
	if n, _ := histogramOf(t, h, "meshop_controlplane_convergence_seconds"); n != 0 {
		t.Errorf("a node's first configuration counted as a convergence (%d)", n)
	}
	clock.advance(time.Second)
	seen := clock.now()
	clock.advance(250 * time.Millisecond)
	sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	h.srv.Apply(sh.snapshot(), seen) // only order-1's EDS changes among the connected
	poll.Until(t, wait, func() (bool, string) {
		n, _ := histogramOf(t, h, "meshop_controlplane_convergence_seconds")
		return n == 1, fmt.Sprintf("%d convergences observed", n)
	})
	if _, s := histogramOf(t, h, "meshop_controlplane_convergence_seconds"); s != 0.25 {
		t.Errorf("convergence = %vs, want 0.25s", s)
	}
}

// TestNackFlavour: the NACK counter says which flavour of node rejected.
func TestNackFlavour(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	h.srv.Apply(newShop().snapshot(), time.Now())
	reject := func(typeURL string, _ map[string]proto.Message) string {
		if typeURL == resource.ClusterType {
			return "clusters refused by the test"
		}
		return ""
	}
	envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Reject: reject,
		Metadata: map[string]any{translate.MetaFlavor: translate.FlavorProxyless}})
	envoysim.StartT(t, h.addr, envoysim.Options{ID: "edge-1", Cluster: "edge", Reject: reject})
	poll.Until(t, wait, func() (bool, string) {
		p := testutil.ToFloat64(h.metrics.Nacks.WithLabelValues(resource.ClusterType, "proxyless"))
		e := testutil.ToFloat64(h.metrics.Nacks.WithLabelValues(resource.ClusterType, "edge"))
		return p >= 1 && e >= 1, fmt.Sprintf("NACKs proxyless %v edge %v", p, e)
	})
	if got := testutil.ToFloat64(h.metrics.Nacks.WithLabelValues(resource.ClusterType, "sidecar")); got != 0 {
		t.Errorf("NACKs{sidecar} = %v, want 0", got)
	}
	if got := h.node("order-1").Sync; got != serve.SyncNacked {
		t.Errorf("proxyless order-1 sync = %s", got)
	}
}

// TestServicesWithoutPassingInstances: a service whose every instance
// fails is listed and counted; it is dropped once one passes again or
// the service leaves the catalog.
func TestServicesWithoutPassingInstances(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	sh := newShop()
	h.srv.Apply(sh.snapshot(), time.Now())
	check := func(want []string, passing map[string]float64) {
		t.Helper()
		if got := h.srv.ServicesWithoutPassing(); !slices.Equal(got, want) {
			t.Errorf("services without passing instances = %v, want %v", got, want)
		}
		if got := testutil.ToFloat64(h.metrics.ServicesWithoutPassing); got != float64(len(want)) {
			t.Errorf("gauge = %v, want %d", got, len(want))
		}
		got := servicePassing(t, h.reg)
		for svc, n := range passing {
			if got[svc] != n {
				t.Errorf("passing instances of %s = %v, want %v", svc, got[svc], n)
			}
		}
	}
	check([]string{}, map[string]float64{"user": 2, "payment": 1})
	sh.set("payment-1", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	sh.set("user-1", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	h.srv.Apply(sh.snapshot(), time.Now())
	check([]string{"payment"}, map[string]float64{"user": 1, "payment": 0})
	sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusWarning })
	h.srv.Apply(sh.snapshot(), time.Now())
	check([]string{"payment", "user"}, map[string]float64{"user": 0, "payment": 0, "order": 1})
	sh.set("payment-1", func(i *catalog.Instance) { i.Status = catalog.StatusPassing })
	h.srv.Apply(sh.snapshot(), time.Now())
	check([]string{"user"}, map[string]float64{"payment": 1})
	sh.mu.Lock()
	delete(sh.insts, "user-1")
	delete(sh.insts, "user-2")
	sh.mu.Unlock()
	h.srv.Apply(sh.snapshot(), time.Now())
	check([]string{}, nil)
	if got := servicePassing(t, h.reg); len(got) != 3 {
		t.Errorf("service_passing_instances = %v, want 3 series (user's dropped)", got)
	}
}

// servicePassing scrapes service_passing_instances, by service.
func servicePassing(t *testing.T, reg *prometheus.Registry) map[string]float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() == "meshop_controlplane_service_passing_instances" {
			for _, m := range mf.GetMetric() {
				out[m.GetLabel()[0].GetValue()] = m.GetGauge().GetValue()
			}
		}
	}
	return out
}

// raw is an ADS stream the test drives by hand, for clusters only: it
// answers when told to.
type raw struct {
	delta  bool
	sotw   discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
	dstr   discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesClient
	cancel context.CancelFunc
	node   *corev3.Node
}

type rawResp struct{ version, nonce string }

func openRaw(t *testing.T, addr, id, cluster string, delta bool) *raw {
	t.Helper()
	c := newChurner(t, addr)
	ctx, cancel := context.WithCancel(context.Background())
	r := &raw{delta: delta, cancel: cancel, node: &corev3.Node{Id: id, Cluster: cluster}}
	t.Cleanup(r.close)
	var err error
	if delta {
		r.dstr, err = c.client.DeltaAggregatedResources(ctx)
		if err == nil {
			err = r.dstr.Send(&discoveryv3.DeltaDiscoveryRequest{Node: r.node, TypeUrl: resource.ClusterType})
		}
	} else {
		r.sotw, err = c.client.StreamAggregatedResources(ctx)
		if err == nil {
			err = r.sotw.Send(&discoveryv3.DiscoveryRequest{Node: r.node, TypeUrl: resource.ClusterType})
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *raw) recv(t *testing.T) rawResp {
	t.Helper()
	if r.delta {
		resp, err := r.dstr.Recv()
		if err != nil {
			t.Fatal(err)
		}
		return rawResp{resp.GetSystemVersionInfo(), resp.GetNonce()}
	}
	resp, err := r.sotw.Recv()
	if err != nil {
		t.Fatal(err)
	}
	return rawResp{resp.GetVersionInfo(), resp.GetNonce()}
}

func (r *raw) ack(t *testing.T, resp rawResp) {
	t.Helper()
	var err error
	if r.delta {
		err = r.dstr.Send(&discoveryv3.DeltaDiscoveryRequest{Node: r.node, TypeUrl: resource.ClusterType, ResponseNonce: resp.nonce})
	} else {
		err = r.sotw.Send(&discoveryv3.DiscoveryRequest{Node: r.node, TypeUrl: resource.ClusterType, VersionInfo: resp.version, ResponseNonce: resp.nonce})
	}
	if err != nil {
		t.Fatal(err)
	}
}

func (r *raw) close() { r.cancel() }
