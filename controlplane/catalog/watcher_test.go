package catalog_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/localenv"
)

func startWatcher(t *testing.T, src catalog.Source, logs *localenv.LogBuffer) *catalog.Watcher {
	t.Helper()
	w := catalog.NewWatcher(src, catalog.Options{
		Logger:     slog.New(slog.NewJSONHandler(logs, nil)),
		Wait:       5 * time.Second,
		BackoffMin: 20 * time.Millisecond, BackoffMax: 200 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	})
	return w
}

func latest(w *catalog.Watcher) *catalog.Snapshot {
	s, _ := w.Take()
	return s
}

func has[V any](m pmap.Map[V], key string) bool {
	_, ok := m.Get(key)
	return ok
}

func statusOf(s *catalog.Snapshot, id string) string {
	if s == nil {
		return "no snapshot"
	}
	for _, insts := range s.Services.All() {
		for _, in := range insts {
			if in.ID == id {
				return in.Status
			}
		}
	}
	return "absent"
}

func TestWatcherFollowsConsul(t *testing.T) {
	agent, consul := consultest.Start(t)
	agent.Register(consultest.Instance{Service: "user", ID: "user-1", Port: 20001, AppPort: "8080"})
	agent.Register(consultest.Instance{Service: "user", ID: "user-2", Port: 20002, AppPort: "8080"})
	agent.PutPolicy("user", `{"timeout":"1s"}`)

	logs := &localenv.LogBuffer{}
	src, err := catalog.NewConsulSource(catalog.Connection{Address: consul.HTTPAddr(), Token: consul.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, src, logs)

	consultest.Eventually(t, 10*time.Second, func() (bool, string) {
		s := latest(w)
		return statusOf(s, "user-1") == "passing" && statusOf(s, "user-2") == "passing" && has(s.Policies, "user"),
			fmt.Sprintf("snapshot %+v", s)
	})
	first := latest(w)
	if first.Index == 0 {
		t.Error("snapshot index is 0")
	}
	users, _ := first.Services.Get("user")
	in := users[0]
	if in.Address != "127.0.0.1" || in.Port != 20001 || in.Meta["mesh_app_port"] != "8080" {
		t.Errorf("instance = %+v", in)
	}

	// A critical check is visible at once; the instance is not removed.
	start := time.Now()
	agent.Fail("user-2")
	consultest.Eventually(t, 2*time.Second, func() (bool, string) {
		return statusOf(latest(w), "user-2") == "critical", statusOf(latest(w), "user-2")
	})
	if d := time.Since(start); d > time.Second {
		t.Errorf("critical seen after %s, want well under 1s", d)
	}
	agent.Pass("user-2")
	consultest.Eventually(t, 2*time.Second, func() (bool, string) {
		return statusOf(latest(w), "user-2") == "passing", statusOf(latest(w), "user-2")
	})

	// New services and policies appear; deregistered ones go.
	agent.Register(consultest.Instance{Service: "order", ID: "order-1", Port: 20003, AppPort: "8080"})
	agent.PutPolicy("order", `{}`)
	consultest.Eventually(t, 2*time.Second, func() (bool, string) {
		s := latest(w)
		return statusOf(s, "order-1") == "passing" && has(s.Policies, "order"), fmt.Sprintf("%+v", s)
	})
	agent.Deregister("order-1")
	consultest.Eventually(t, 2*time.Second, func() (bool, string) {
		s := latest(w)
		return !has(s.Services, "order"), fmt.Sprint(slices.Collect(s.Services.Keys()))
	})

	// Consul crashes and restarts: the last snapshot stays, one line says
	// it is gone, one says it is back, and the watcher resumes. (Killed,
	// not stopped: while a graceful stop closes its internals, Consul
	// answers some queries with 500 and others with 200 for a few
	// milliseconds, a real outage and recovery before the real outage.)
	before := latest(w)
	if err := consul.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-consul.Done()
	consultest.Eventually(t, 5*time.Second, func() (bool, string) {
		return !w.Status().Reachable, "still reachable"
	})
	if got := latest(w); got != before {
		t.Errorf("snapshot replaced while Consul was down: %+v", got)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := consul.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	consultest.Eventually(t, 15*time.Second, func() (bool, string) {
		return w.Status().Reachable, w.Status().LastError
	})
	agent.Fail("user-1")
	consultest.Eventually(t, 5*time.Second, func() (bool, string) {
		return statusOf(latest(w), "user-1") == "critical", statusOf(latest(w), "user-1")
	})
	if n := strings.Count(logs.String(), "consul unreachable"); n != 1 {
		t.Errorf("'consul unreachable' logged %d times, want 1:\n%s", n, logs.String())
	}
	if n := strings.Count(logs.String(), "consul reachable again"); n != 1 {
		t.Errorf("'consul reachable again' logged %d times, want 1:\n%s", n, logs.String())
	}
}

// flakySource fails until told otherwise, then serves a fixed catalog.
type flakySource struct {
	mu    sync.Mutex
	fail  bool
	calls int
}

func (f *flakySource) err() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail {
		return errors.New("connection refused")
	}
	return nil
}

func (f *flakySource) setFail(v bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.fail = v
}

func (f *flakySource) Services(ctx context.Context, index uint64, wait time.Duration) ([]string, uint64, error) {
	return block(ctx, f, index, []string{"user"})
}

func (f *flakySource) Instances(ctx context.Context, svc string, index uint64, wait time.Duration) ([]catalog.Instance, uint64, error) {
	return block(ctx, f, index, []catalog.Instance{{ID: "user-1", Service: "user", Status: "passing"}})
}

func (f *flakySource) Policies(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error) {
	return block(ctx, f, index, map[string][]byte{})
}

func (f *flakySource) Intentions(ctx context.Context, index uint64, wait time.Duration) (map[string][]byte, uint64, error) {
	return block(ctx, f, index, map[string][]byte{"user": []byte(`{"Sources":[]}`)})
}

func (f *flakySource) CA(ctx context.Context, index uint64, wait time.Duration) (catalog.CA, uint64, error) {
	return block(ctx, f, index, catalog.CA{TrustDomain: "example.consul", RootPEMs: []string{"root"}})
}

// block answers at once with index 7 the first time, then blocks like a
// real blocking query with nothing new (until ctx ends).
func block[T any](ctx context.Context, f *flakySource, index uint64, v T) (T, uint64, error) {
	var zero T
	if err := f.err(); err != nil {
		return zero, 0, err
	}
	if index == 7 {
		<-ctx.Done()
		return zero, 0, ctx.Err()
	}
	return v, 7, nil
}

func TestWatcherWaitsForCompleteFirstSnapshotAndLogsOnce(t *testing.T) {
	src := &flakySource{fail: true}
	logs := &localenv.LogBuffer{}
	w := startWatcher(t, src, logs)
	consultest.Eventually(t, 5*time.Second, func() (bool, string) {
		src.mu.Lock()
		defer src.mu.Unlock()
		return src.calls > 20, fmt.Sprintf("%d calls", src.calls)
	})
	if s := latest(w); s != nil {
		t.Fatalf("published %+v while Consul never answered", s)
	}
	if n := strings.Count(logs.String(), "consul unreachable"); n != 1 {
		t.Errorf("'consul unreachable' logged %d times over many retries, want 1:\n%s", n, logs.String())
	}
	src.setFail(false)
	select {
	case <-w.Changed():
	case <-time.After(5 * time.Second):
		t.Fatal("no snapshot after Consul came back")
	}
	s, seen := w.Take()
	if statusOf(s, "user-1") != "passing" || seen.IsZero() || !has(s.Intentions, "user") || s.CA.TrustDomain != "example.consul" {
		t.Errorf("snapshot %+v seen %v", s, seen)
	}
	if st := w.Status(); !st.Synced || !st.Reachable || st.Index != 7 {
		t.Errorf("status = %+v", st)
	}
}

// boundedSource is flakySource (one service, user) holding at most
// capacity blocking queries at once.
type boundedSource struct {
	flakySource
	capacity int
}

func (b *boundedSource) QueryCapacity() int { return b.capacity }

// TestWatcherWarnsWhenServicesExceedTheQueriesItCanHold: a source that
// holds fewer blocking queries than the watcher needs (one per service
// and four more) gets one warning; one that holds them all gets none.
func TestWatcherWarnsWhenServicesExceedTheQueriesItCanHold(t *testing.T) {
	for _, tc := range []struct {
		capacity int
		warn     bool
	}{{4, true}, {5, false}} {
		t.Run(fmt.Sprint(tc.capacity), func(t *testing.T) {
			logs := &localenv.LogBuffer{}
			w := startWatcher(t, &boundedSource{capacity: tc.capacity}, logs)
			select {
			case <-w.Changed():
			case <-time.After(5 * time.Second):
				t.Fatal("no snapshot")
			}
			const warning = "more services than blocking queries"
			if got := strings.Count(logs.String(), warning); got != map[bool]int{true: 1, false: 0}[tc.warn] {
				t.Errorf("%q logged %d times with capacity %d for 5 queries:\n%s", warning, got, tc.capacity, logs.String())
			}
		})
	}
}
