package catalog

import (
	"context"
	"errors"
	"maps"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/controlplane/internal/pmap"
)

func TestHoldDowngrades(t *testing.T) {
	pass := func(id string) Instance { return Instance{ID: id, Service: "user", Status: StatusPassing} }
	crit := func(id string) Instance { return Instance{ID: id, Service: "user", Status: StatusCritical} }
	same := []Instance{pass("s1")} // unchanged since base: the same slice
	base := pmap.FromMap(map[string][]Instance{"user": {pass("u1"), pass("u2"), crit("u3"), pass("u4")}, "gone": {pass("g1")}, "same": same})
	cur := pmap.FromMap(map[string][]Instance{"user": {crit("u1"), pass("u2"), crit("u3"), pass("u5")}, "same": same})
	got, held := holdDowngrades(cur, base)
	want := map[string][]Instance{
		"user": {pass("u1"), pass("u2"), crit("u3"), pass("u4"), pass("u5")},
		"gone": {pass("g1")},
		"same": same,
	}
	if diff := cmp.Diff(want, maps.Collect(got.All())); diff != "" {
		t.Errorf("holdDowngrades (-want +got):\n%s", diff)
	}
	if held != 3 { // u1 downgraded, u4 and g1 missing
		t.Errorf("held = %d, want 3", held)
	}
	if users, _ := cur.Get("user"); users[0].Status != StatusCritical || cur.Len() != 2 {
		t.Error("input modified")
	}
}

// TestSyncRaw: a KV answer updates the policies it changed, and only
// a real change makes a new map.
func TestSyncRaw(t *testing.T) {
	cur := pmap.FromMap(map[string][]byte{"user": []byte("1"), "order": []byte("2")})
	if got, changed := syncRaw(cur, map[string][]byte{"user": []byte("1"), "order": []byte("2")}); changed || got != cur {
		t.Errorf("the same answer: changed = %v, new map %v", changed, got != cur)
	}
	got, changed := syncRaw(cur, map[string][]byte{"user": []byte("1"), "product": []byte("3")})
	want := map[string][]byte{"user": []byte("1"), "product": []byte("3")}
	if diff := cmp.Diff(want, maps.Collect(got.All())); !changed || diff != "" {
		t.Errorf("changed = %v, (-want +got):\n%s", changed, diff)
	}
}

// restartingSource is one service whose instance status the test sets,
// and which can be made to fail like a stopped Consul.
type restartingSource struct {
	mu     sync.Mutex
	down   bool
	status string
	index  uint64
	wake   chan struct{}
}

func (r *restartingSource) get(ctx context.Context, index uint64) (uint64, string, error) {
	for {
		r.mu.Lock()
		if r.down {
			r.mu.Unlock()
			return 0, "", errors.New("connection refused")
		}
		if r.index != index {
			defer r.mu.Unlock()
			return r.index, r.status, nil
		}
		wake := r.wake
		r.mu.Unlock()
		select {
		case <-ctx.Done():
			return 0, "", ctx.Err()
		case <-wake:
		}
	}
}

func (r *restartingSource) set(down bool, status string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.down, r.status = down, status
	r.index++
	close(r.wake)
	r.wake = make(chan struct{})
}

func (r *restartingSource) Services(ctx context.Context, index uint64, _ time.Duration) ([]string, uint64, error) {
	i, _, err := r.get(ctx, index)
	return []string{"user"}, i, err
}

func (r *restartingSource) Instances(ctx context.Context, _ string, index uint64, _ time.Duration) ([]Instance, uint64, error) {
	i, st, err := r.get(ctx, index)
	return []Instance{{ID: "user-1", Service: "user", Status: st}}, i, err
}

func (r *restartingSource) Policies(ctx context.Context, index uint64, _ time.Duration) (map[string][]byte, uint64, error) {
	i, _, err := r.get(ctx, index)
	return map[string][]byte{}, i, err
}

func (r *restartingSource) Intentions(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error) {
	return r.Policies(ctx, index, wait)
}

func (r *restartingSource) CA(ctx context.Context, index uint64, _ time.Duration) (CA, uint64, error) {
	i, _, err := r.get(ctx, index)
	return CA{TrustDomain: "example.consul"}, i, err
}

// TestSettleAfterOutage: a Consul that comes back reporting a passing
// instance critical is not believed until Settle has passed.
func TestSettleAfterOutage(t *testing.T) {
	src := &restartingSource{status: StatusPassing, index: 1, wake: make(chan struct{})}
	w := NewWatcher(src, Options{Settle: 300 * time.Millisecond, BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go w.Run(ctx)

	status := func() string {
		s, _ := w.Take()
		if s == nil {
			return "none"
		}
		users, _ := s.Services.Get("user")
		if len(users) == 0 {
			return "none"
		}
		return users[0].Status
	}
	waitFor := func(want string, within time.Duration) time.Duration {
		t.Helper()
		start := time.Now()
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for status() != want {
			if time.Since(start) > within {
				t.Fatalf("status %q, want %q within %s", status(), want, within)
			}
			<-tick.C
		}
		return time.Since(start)
	}
	waitFor(StatusPassing, 2*time.Second)
	src.set(true, StatusPassing) // Consul goes away
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for w.Status().Reachable {
		<-tick.C
	}
	src.set(false, StatusCritical) // and comes back with the check critical
	for !w.Status().Reachable {
		<-tick.C
	}
	if st := w.Status(); st.SettlingUntil.IsZero() {
		t.Errorf("status %+v: not settling", st)
	}
	if got := status(); got != StatusPassing {
		t.Errorf("status right after the outage = %q, want passing (held)", got)
	}
	if took := waitFor(StatusCritical, 2*time.Second); took < 200*time.Millisecond {
		t.Errorf("downgrade published after %s, want it held for the settle period", took)
	}
	if st := w.Status(); !st.SettlingUntil.IsZero() {
		t.Errorf("still settling: %+v", st)
	}
}
