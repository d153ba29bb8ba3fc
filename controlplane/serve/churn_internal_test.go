package serve

import (
	"fmt"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// fakeClock is a clock the test moves.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *fakeClock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func testTracker(c *fakeClock, forget time.Duration) *tracker {
	t := newTracker(slog.New(slog.DiscardHandler), NewMetrics(nil))
	t.now, t.forgetAfter = c.now, forget
	return t
}

// cycle opens a stream for node id, makes its first request and, when
// close is set, closes it.
func cycle(t testing.TB, tr *tracker, stream int64, id, cluster string, close bool) {
	if err := tr.OnStreamOpen(t.Context(), stream, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := tr.request(streamKey{false, stream}, &corev3.Node{Id: id, Cluster: cluster}); err != nil {
		t.Fatal(err)
	}
	if close {
		tr.OnStreamClosed(stream, nil)
	}
}

// TestTrackerForgetsDepartedNodes: 10,000 connect/disconnect cycles of
// distinct node ids, the clock moving 100ms per cycle with a grace period
// of 30s: after every cycle the tracker holds the connected nodes and the
// ones that left less than 30s ago, no more.
func TestTrackerForgetsDepartedNodes(t *testing.T) {
	const (
		cycles = 10_000
		step   = 100 * time.Millisecond
		grace  = 30 * time.Second
	)
	c := newFakeClock()
	tr := testTracker(c, grace)
	// Two nodes stay connected throughout.
	cycle(t, tr, 1, "edge-keep-1", "edge", false)
	cycle(t, tr, 2, "edge-keep-2", "edge", false)
	within := int(grace / step) // cycles whose node left less than grace ago
	for i := range cycles {
		cycle(t, tr, int64(10+i), fmt.Sprintf("edge-%d", i), "edge", true)
		want := 2 + min(i+1, within)
		if got := tr.len(); got != want {
			t.Fatalf("after cycle %d: tracker holds %d nodes, want %d (2 connected + %d within the grace period)", i, got, want, want-2)
		}
		c.advance(step)
	}
	// Once the grace period has passed, only the connected ones are left.
	c.advance(grace)
	if got := tr.len(); got != 2 {
		t.Errorf("after the grace period: %d nodes, want the 2 connected", got)
	}
	if got := len(tr.departed); got != 0 {
		t.Errorf("departed queue holds %d entries after every node was forgotten", got)
	}
	for _, n := range tr.snapshot() {
		if !n.Connected {
			t.Errorf("disconnected node %s still listed", n.ID)
		}
	}
}

// TestTrackerReconnectWithinGrace: a node back within the grace period
// keeps its entry (what it ACKed); one that flaps is queued once; a node
// refused at its first request is forgotten like one that left.
func TestTrackerReconnectWithinGrace(t *testing.T) {
	c := newFakeClock()
	tr := testTracker(c, time.Minute)
	cycle(t, tr, 1, "edge-1", "edge", false)
	tr.mu.Lock()
	tr.nodes["edge-1"].LastAck[resource.ClusterType] = Ack{Version: "v1"}
	tr.mu.Unlock()
	tr.OnStreamClosed(1, nil)
	// It flaps 100 times within the minute.
	for i := range 100 {
		c.advance(100 * time.Millisecond)
		cycle(t, tr, int64(100+i), "edge-1", "edge", true)
	}
	if got := len(tr.departed); got != 1 {
		t.Errorf("a flapping node is queued %d times, want once", got)
	}
	c.advance(50 * time.Second) // 60s after it first left, 50s after it last left
	n := nodeOf(tr, "edge-1")
	if n == nil || n.LastAck[resource.ClusterType].Version != "v1" {
		t.Fatalf("node back within the grace period lost its entry: %+v", n)
	}
	c.advance(10 * time.Second)
	if n := nodeOf(tr, "edge-1"); n != nil {
		t.Errorf("node gone for the grace period still listed: %+v", n)
	}

	// Reconnected and connected: never forgotten.
	cycle(t, tr, 500, "edge-2", "edge", true)
	cycle(t, tr, 501, "edge-2", "edge", false)
	c.advance(time.Hour)
	if n := nodeOf(tr, "edge-2"); n == nil || !n.Connected {
		t.Errorf("connected node forgotten: %+v", n)
	}
}

func nodeOf(tr *tracker, id string) *NodeStatus {
	for _, n := range tr.snapshot() {
		if n.ID == id {
			return &n
		}
	}
	return nil
}

// TestTypeSync is the sync state of one type in every case.
func TestTypeSync(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	const after = 5 * time.Second
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	tests := []struct {
		name           string
		sent           Sent
		acked, nacked  string
		want           target
		connected, now time.Time
		state          string
	}{
		{"acked the snapshot's version", Sent{Version: "v2", At: at(1)}, "v2", "", newTarget("v2", at(1), time.Time{}), t0, at(100), SyncSynced},
		{"push in flight, previous version acked", Sent{Version: "v2", At: at(1)}, "v1", "", newTarget("v2", at(1), time.Time{}), t0, at(3), SyncSynced},
		{"push unacked for longer than StaleAfter", Sent{Version: "v2", At: at(1)}, "v1", "", newTarget("v2", at(1), time.Time{}), t0, at(7), SyncStale},
		{"snapshot version not sent for longer than StaleAfter", Sent{Version: "v1", At: at(0)}, "v1", "", newTarget("v2", at(1), time.Time{}), t0, at(7), SyncStale},
		{"nothing acked yet", Sent{Version: "v1", At: at(1)}, "", "", newTarget("v1", at(0), time.Time{}), at(1), at(2), SyncStale},
		{"rejected the snapshot's version", Sent{Version: "v2", At: at(1)}, "v1", "v2", newTarget("v2", at(1), time.Time{}), t0, at(2), SyncNacked},
		{"rejected it long ago: still NACKED", Sent{Version: "v2", At: at(1)}, "v1", "v2", newTarget("v2", at(1), time.Time{}), t0, at(100), SyncNacked},
		{"new version in flight after a NACK", Sent{Version: "v2", At: at(1)}, "v1", "v2", newTarget("v3", at(10), time.Time{}), t0, at(11), SyncNacked},
		{"new version not sent long after a NACK", Sent{Version: "v2", At: at(1)}, "v1", "v2", newTarget("v3", at(10), time.Time{}), t0, at(20), SyncStale},
		{"runs the snapshot's version after rejecting another", Sent{Version: "v2", At: at(1)}, "v1", "v2", newTarget("v1", at(10), time.Time{}), t0, at(20), SyncSynced},
		{"connected after the version was set", Sent{Version: "v2", At: at(50)}, "", "", newTarget("v2", at(1), time.Time{}), at(50), at(52), SyncStale},
		{"no snapshot known: judged by what was sent", Sent{Version: "v2", At: at(1)}, "v2", "", target{}, t0, at(100), SyncSynced},
	}
	for _, tt := range tests {
		if got := typeSync(tt.sent, tt.acked, tt.nacked, tt.want, tt.connected, tt.now, after); got != tt.state {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.state)
		}
	}
}
