package serve_test

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// testClock is a clock the test moves.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *testClock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

// churner opens ADS streams (state of the world) on one connection: each
// stream asks for clusters as a node and ends once it got them.
type churner struct {
	client discoveryv3.AggregatedDiscoveryServiceClient
}

func newChurner(tb testing.TB, addr string) *churner {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { conn.Close() })
	return &churner{client: discoveryv3.NewAggregatedDiscoveryServiceClient(conn)}
}

// cycle connects as node id (cluster edge), waits for its clusters and
// disconnects.
func (c *churner) cycle(id string) error {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	st, err := c.client.StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := st.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id, Cluster: "edge"}, TypeUrl: resource.ClusterType}); err != nil {
		return err
	}
	if _, err := st.Recv(); err != nil {
		return fmt.Errorf("%s: %w", id, err)
	}
	return nil
}

// batch runs n cycles of distinct ids at once.
func (c *churner) batch(prefix string, n int) error {
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			if err := c.cycle(fmt.Sprintf("%s-%d", prefix, i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// TestChurnForgetsDepartedNodes: 10,000 connect/disconnect cycles of
// distinct node ids through the ADS server, in batches of 100, the
// (injected) clock moving 1s between batches and nodes forgotten 10s
// after they left. After every batch the tracker holds the two nodes
// that stay connected and the nodes of the batches that left less than
// 10s ago; /debug/nodes lists the same.
func TestChurnForgetsDepartedNodes(t *testing.T) {
	const (
		batches = 100
		size    = 100
		grace   = 10 * time.Second
	)
	clock := newTestClock()
	h := start(t, translate.DefaultConfig(), func(o *serve.Options) { o.NodeForgetAfter = grace })
	h.srv.SetClockForTest(clock.now)
	h.srv.Apply(newShop().snapshot(), time.Now())
	for _, id := range []string{"edge-1", "order-1"} {
		cluster := "edge"
		if id == "order-1" {
			cluster = "order"
		}
		envoysim.StartT(t, h.addr, envoysim.Options{ID: id, Cluster: cluster})
	}
	connected := func() float64 {
		return testutil.ToFloat64(h.metrics.Connected.WithLabelValues("edge")) + testutil.ToFloat64(h.metrics.Connected.WithLabelValues("sidecar"))
	}
	poll.Until(t, wait, func() (bool, string) { return connected() == 2, fmt.Sprintf("%v connected", connected()) })

	c := newChurner(t, h.addr)
	within := int(grace / time.Second)
	for b := range batches {
		if err := c.batch(fmt.Sprintf("edge-churn%d", b), size); err != nil {
			t.Fatal(err)
		}
		// Every stream of the batch closed (at this clock time).
		poll.Until(t, wait, func() (bool, string) { return connected() == 2, fmt.Sprintf("%v connected", connected()) })
		want := 2 + size*min(b+1, within)
		if got := h.srv.TrackedForTest(); got != want {
			t.Fatalf("after batch %d: tracker holds %d nodes, want %d", b, got, want)
		}
		clock.advance(time.Second)
	}
	clock.advance(grace)
	if got := h.srv.TrackedForTest(); got != 2 {
		t.Errorf("after the grace period: tracker holds %d nodes, want the 2 connected", got)
	}
	// Forgotten edges leave nothing for the server to drop (they share
	// the edge's snapshot): churn between passes piles nothing up.
	if got := h.srv.ForgottenForTest(); got != 0 {
		t.Errorf("%d forgotten edges wait for the server to drop their snapshots, want none", got)
	}
	for _, n := range h.srv.Nodes() {
		if !n.Connected && n.Snapshot == nil {
			t.Errorf("/debug/nodes lists a departed node without a snapshot: %s", n.ID)
		}
	}
}

// BenchmarkNodeChurn is the heap a control plane keeps after 10,000
// connect/disconnect cycles of distinct node ids (state of the world,
// real ADS server on loopback, 100 at a time): heap-bytes once the grace
// period has passed (what churn leaves behind), retained-bytes while the
// 10,000 departed nodes are within it (NODE_FORGET_AFTER's cost),
// both after a forced GC and against the heap before the churn.
func BenchmarkNodeChurn(b *testing.B) {
	const cycles, size = 10_000, 100
	var after, within float64
	for range b.N {
		clock := newTestClock()
		h := startBench(b, clock)
		c := newChurner(b, h.addr)
		allClosed := func() {
			poll.Until(b, wait, func() (bool, string) {
				n := testutil.ToFloat64(h.metrics.Connected.WithLabelValues("edge"))
				return n == 0, fmt.Sprintf("%v edges connected", n)
			})
		}
		if err := c.batch("edge-warm", size); err != nil { // connections and buffers warm
			b.Fatal(err)
		}
		allClosed()
		clock.advance(2 * time.Minute)
		if got := h.srv.TrackedForTest(); got != 0 {
			b.Fatalf("tracker holds %d nodes before the churn", got)
		}
		before := heap(h.srv)
		for i := range cycles / size {
			if err := c.batch(fmt.Sprintf("edge-churn%d", i), size); err != nil {
				b.Fatal(err)
			}
		}
		allClosed()
		if got := h.srv.TrackedForTest(); got != cycles {
			b.Fatalf("tracker holds %d nodes within the grace period, want %d", got, cycles)
		}
		within += float64(heap(h.srv) - before)
		clock.advance(2 * time.Minute)
		if got := h.srv.TrackedForTest(); got != 0 {
			b.Fatalf("tracker holds %d nodes after the grace period", got)
		}
		after += float64(heap(h.srv) - before)
	}
	b.ReportMetric(after/float64(b.N), "heap-bytes")
	b.ReportMetric(within/float64(b.N), "retained-bytes")
}

// startBench serves a small mesh with nodes forgotten a minute after
// they left, on clock.
func startBench(b *testing.B, clock *testClock) *harness {
	h := &harness{metrics: serve.NewMetrics(nil)}
	h.srv = serve.New(serve.Options{Metrics: h.metrics, Translate: translate.DefaultConfig(), NodeForgetAfter: time.Minute})
	h.srv.SetClockForTest(clock.now)
	h.srv.Apply(newShop().snapshot(), time.Now())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	h.addr = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(lis) }()
	b.Cleanup(func() {
		h.srv.Stop(2 * time.Second)
		if err := <-done; err != nil {
			b.Errorf("Serve: %v", err)
		}
	})
	return h
}

// heap is the live heap after a forced collection (srv keeps the server
// reachable until then).
func heap(srv *serve.Server) int64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	runtime.KeepAlive(srv)
	return int64(ms.HeapAlloc)
}
