package serve_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// TestSnapshotsOnlyForNodesThatAsked: a pass keeps the edge's snapshot
// and those of nodes that asked; an instance whose Envoy never connected
// costs none. A node gets its configuration on its first request, keeps
// it up to date while it may come back, and loses it once the tracker
// forgets it (NodeForgetAfter); it gets a fresh one when it asks again.
func TestSnapshotsOnlyForNodesThatAsked(t *testing.T) {
	clock := newTestClock()
	h := start(t, translate.DefaultConfig(), func(o *serve.Options) { o.NodeForgetAfter = time.Minute })
	h.srv.SetClockForTest(clock.now)
	sh := newShop()
	h.srv.Apply(sh.snapshot(), clock.now())
	built := func() []string {
		var out []string
		for _, n := range h.srv.Nodes() {
			if n.Snapshot != nil {
				out = append(out, n.Key)
			}
		}
		slices.Sort(out)
		return out
	}
	if got := built(); !slices.Equal(got, []string{"edge"}) {
		t.Fatalf("snapshots after the first pass: %v, want the edge's alone", got)
	}

	order := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: true})
	order.Must(t, wait, "order-1's configuration on its first request", func(s envoysim.State) bool { return len(s.Endpoints) == 3 })
	if got := built(); !slices.Equal(got, []string{"edge", "order-1"}) {
		t.Fatalf("snapshots with order-1 connected: %v", got)
	}
	// Kept up to date while connected, and after it left (it may come back).
	sh.set("user-1", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	h.srv.Apply(sh.snapshot(), clock.now())
	order.Must(t, wait, "user-1 removed", func(s envoysim.State) bool { return !slices.Contains(s.Hosts("svc_user"), "user-1") })
	order.Close()
	poll.Until(t, wait, func() (bool, string) { return !h.node("order-1").Connected, "order-1 still connected" })
	sh.set("user-1", func(i *catalog.Instance) { i.Status = catalog.StatusPassing })
	h.srv.Apply(sh.snapshot(), clock.now())
	if got := built(); !slices.Equal(got, []string{"edge", "order-1"}) {
		t.Fatalf("snapshots after order-1 left: %v, want order-1's kept", got)
	}

	// Forgotten: the next pass drops its snapshot.
	clock.advance(time.Minute + time.Second)
	sh.set("user-1", func(i *catalog.Instance) { i.Port++ })
	h.srv.Apply(sh.snapshot(), clock.now())
	if got := built(); !slices.Equal(got, []string{"edge"}) {
		t.Fatalf("snapshots after order-1 was forgotten: %v, want the edge's alone", got)
	}
	again := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order"})
	again.Must(t, wait, "order-1's configuration when it asks again", func(s envoysim.State) bool {
		return slices.Contains(s.Hosts("svc_user"), "user-1") && len(s.Endpoints) == 3
	})
	if got := built(); !slices.Equal(got, []string{"edge", "order-1"}) {
		t.Fatalf("snapshots after order-1 came back: %v", got)
	}
}

// TestProxylessResourcesOnlyOnceAGRPCClientAsks: until a gRPC client
// asks, no service keeps its proxyless resources; the first one gets
// them (real RPCs through the control plane's configuration), and an
// Envoy connected before is not pushed anything for it.
func TestProxylessResourcesOnlyOnceAGRPCClientAsks(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackend(t, "user-1"), startBackend(t, "user-2")}
	sh := proxylessShop(backends, []string{"v1", "v1"})
	h.srv.Apply(sh.snapshot(), time.Now())
	envoy := envoysim.StartT(t, h.addr, envoysim.Options{ID: "user-1", Cluster: "user", Delta: true})
	envoy.Must(t, wait, "user-1's Envoy configured", func(s envoysim.State) bool { return len(s.Routes) > 0 })
	if h.srv.KeepsProxylessForTest() {
		t.Fatal("proxyless resources kept before any gRPC client asked")
	}
	sent := len(envoy.History())

	c := dialUser(t, h.addr)
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 20)
		return got["user-1"] > 0 && got["user-2"] > 0, fmt.Sprintf("RPCs by instance: %v", got)
	})
	if !h.srv.KeepsProxylessForTest() {
		t.Error("a gRPC client is served, yet proxyless resources are not kept")
	}
	if got := len(envoy.History()); got != sent {
		t.Errorf("the Envoy got %d responses when the first gRPC client came, want none: %+v", got-sent, envoy.History()[sent:])
	}
}

// TestAGRPCClientThatAsksBeforeItsInstanceRegisters: the first gRPC
// client may connect before its own instance is in the catalog; once the
// instance registers, the client is configured (its services' proxyless
// resources were added when it first asked).
func TestAGRPCClientThatAsksBeforeItsInstanceRegisters(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackend(t, "user-1")}
	sh := proxylessShop(backends, []string{"v1"})
	withoutOrder := proxylessShop(backends, []string{"v1"})
	delete(withoutOrder.insts, "order-1")
	h.srv.Apply(withoutOrder.snapshot(), time.Now())
	c := dialUser(t, h.addr) // order-1, not registered yet
	poll.Until(t, wait, func() (bool, string) {
		spread(t, c, backends, 1) // an RPC makes the client ask (and fail: no configuration yet)
		return h.node("order-1").Connected, "order-1 not connected yet"
	})

	h.srv.Apply(sh.snapshot(), time.Now())
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 10)
		return got["user-1"] == 10, fmt.Sprintf("RPCs by instance: %v", got)
	})
}

// TestTheFirstGRPCClientAfterAnOperatorReadItsNode: an operator's read
// builds a node's snapshot in the default (Envoy) flavour; when that node
// then connects as the first gRPC client, it is translated again in its
// own flavour and configured.
func TestTheFirstGRPCClientAfterAnOperatorReadItsNode(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackend(t, "user-1")}
	sh := proxylessShop(backends, []string{"v1"})
	h.srv.Apply(sh.snapshot(), time.Now())
	if _, _, _, err := h.srv.Resources("order-1"); err != nil {
		t.Fatal(err)
	}
	c := dialUser(t, h.addr)
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 10)
		return got["user-1"] == 10, fmt.Sprintf("RPCs by instance: %v", got)
	})
}
