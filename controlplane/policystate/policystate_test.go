package policystate

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/model"
)

// fakeStore is a Store in memory that fails while told to, and records
// every write.
type fakeStore struct {
	mu     sync.Mutex
	data   map[string][]byte
	fail   error
	writes []string
	block  chan struct{} // when set, Save waits for it
}

func newFake() *fakeStore { return &fakeStore{data: map[string][]byte{}} }

func (f *fakeStore) Load(context.Context) (map[string][]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	return maps.Clone(f.data), nil
}

func (f *fakeStore) Save(ctx context.Context, svc string, raw []byte) error {
	f.mu.Lock()
	block := f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	f.data[svc] = raw
	f.writes = append(f.writes, svc+"="+string(raw))
	return nil
}

func (f *fakeStore) Delete(_ context.Context, svc string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	delete(f.data, svc)
	f.writes = append(f.writes, svc+" deleted")
	return nil
}

func (f *fakeStore) set(fn func(f *fakeStore)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeStore) state() (map[string]string, []string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := map[string]string{}
	for k, v := range f.data {
		out[k] = string(v)
	}
	return out, append([]string(nil), f.writes...)
}

func runWriter(t *testing.T, w *Writer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.Run(ctx); close(done) }()
	stop = sync.OnceFunc(func() { cancel(); <-done })
	t.Cleanup(stop)
	return stop
}

// TestWriterKeepsTheNewestValueAndRetries: Set never waits for the store;
// while the store fails, changes wait and only the newest value of a
// service is written once it works; failing and recovering are logged
// once each.
func TestWriterKeepsTheNewestValueAndRetries(t *testing.T) {
	var logs syncBuffer
	store := newFake()
	w := NewWriter(store, WriterOptions{Logger: slog.New(slog.NewJSONHandler(&logs, nil)), BackoffMin: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	runWriter(t, w)

	w.Set("user", []byte(`{"timeout":"2s"}`))
	poll.Until(t, 5*time.Second, func() (bool, string) {
		data, _ := store.state()
		return data["user"] == `{"timeout":"2s"}`, "user not written"
	})

	// Consul down: Set still returns at once, even with a write stuck.
	store.set(func(f *fakeStore) { f.fail = errors.New("connection refused") })
	start := time.Now()
	for _, v := range []string{`{"timeout":"3s"}`, `{"timeout":"4s"}`, `{"timeout":"5s"}`} {
		w.Set("user", []byte(v))
	}
	w.Set("order", []byte(`{"timeout":"1s"}`))
	w.Set("order", nil)
	w.Set("product", []byte(`{"timeout":"1s"}`))
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("Set blocked for %s while the store failed", took)
	}
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return strings.Count(logs.String(), "cannot write") == 1 && w.Pending() == 3, logs.String()
	})
	_, before := store.state()
	store.set(func(f *fakeStore) { f.fail = nil })
	poll.Until(t, 5*time.Second, func() (bool, string) { return w.Pending() == 0, "changes still pending" })
	data, writes := store.state()
	if want := map[string]string{"user": `{"timeout":"5s"}`, "product": `{"timeout":"1s"}`}; !maps.Equal(data, want) {
		t.Errorf("stored = %v, want %v", data, want)
	}
	if got, want := writes[len(before):], []string{"order deleted", `product={"timeout":"1s"}`, `user={"timeout":"5s"}`}; !slices.Equal(got, want) {
		t.Errorf("writes after recovery = %q, want only the newest change of each: %q", got, want)
	}
	if n := strings.Count(logs.String(), "cannot write"); n != 1 {
		t.Errorf("failure logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "written again") {
		t.Errorf("recovery not logged:\n%s", logs.String())
	}
}

// TestWriterSetDoesNotWaitForASlowStore: a write that hangs does not make
// Set wait.
func TestWriterSetDoesNotWaitForASlowStore(t *testing.T) {
	store := newFake()
	block := make(chan struct{})
	store.block = block
	w := NewWriter(store, WriterOptions{})
	runWriter(t, w)
	w.Set("user", []byte(`{}`))
	poll.Until(t, 5*time.Second, func() (bool, string) { return w.Pending() == 0, "the write did not start" })
	start := time.Now()
	for range 100 {
		w.Set("user", []byte(`{"timeout":"1s"}`))
	}
	if took := time.Since(start); took > 50*time.Millisecond {
		t.Errorf("Set waited %s for a hung write", took)
	}
	close(block)
	poll.Until(t, 5*time.Second, func() (bool, string) {
		data, _ := store.state()
		return data["user"] == `{"timeout":"1s"}` && w.Pending() == 0, "the newest value not written"
	})
}

// TestWriterFlushesOnStop: what is pending when Run's context ends is
// written before Run returns.
func TestWriterFlushesOnStop(t *testing.T) {
	store := newFake()
	store.fail = errors.New("down")
	w := NewWriter(store, WriterOptions{BackoffMin: time.Hour, BackoffMax: time.Hour})
	stop := runWriter(t, w)
	w.Set("user", []byte(`{"timeout":"2s"}`))
	poll.Until(t, 5*time.Second, func() (bool, string) { return w.Pending() == 1, "not pending" })
	store.set(func(f *fakeStore) { f.fail = nil })
	stop()
	if data, _ := store.state(); data["user"] != `{"timeout":"2s"}` {
		t.Errorf("stored after stop = %v, want the pending value flushed", data)
	}
}

// TestRestore seeds a builder with the stored policies, logging each
// ignored one with its key, after retrying while the store fails.
func TestRestore(t *testing.T) {
	var logs syncBuffer
	store := newFake()
	store.data = map[string][]byte{"user": []byte(`{"timeout":"2s"}`), "order": []byte(`{"timeout":"never"}`)}
	store.fail = errors.New("connection refused")
	b := model.NewBuilder(model.BuilderOptions{})
	done := make(chan error, 1)
	go func() {
		done <- Restore(context.Background(), store, b, slog.New(slog.NewJSONHandler(&logs, nil)))
	}()
	poll.Until(t, 5*time.Second, func() (bool, string) {
		return strings.Contains(logs.String(), "retrying"), logs.String()
	})
	store.set(func(f *fakeStore) { f.fail = nil })
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(logs.String(), "stored last good policy ignored"); n != 1 ||
		!strings.Contains(logs.String(), `"key":"mesh/state/policy/order"`) {
		t.Errorf("want one line for the ignored order policy:\n%s", logs.String())
	}
	s := &catalog.Snapshot{Policies: pmap.FromMap(map[string][]byte{"user": []byte(`{"timeout":"x"}`)})}
	if st := b.Build(s).Policies["user"]; st.Source != model.PolicyLastGood {
		t.Errorf("user = %+v, want last_good from the store", st)
	}
}

// TestConsulStore: the control plane's own token reads and writes its
// state in a real Consul with ACLs.
func TestConsulStore(t *testing.T) {
	_, consul := consultest.Start(t)
	token, err := consul.ControlPlaneToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewConsul(catalog.Connection{Address: consul.HTTPAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if got, err := s.Load(ctx); err != nil || len(got) != 0 {
		t.Fatalf("Load() on an empty store = %v, %v", got, err)
	}
	for svc, v := range map[string]string{"user": `{"timeout":"2s"}`, "order": `{}`} {
		if err := s.Save(ctx, svc, []byte(v)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Delete(ctx, "order"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "never-stored"); err != nil {
		t.Errorf("deleting a missing key: %v", err)
	}
	got, err := s.Load(ctx)
	if err != nil || len(got) != 1 || string(got["user"]) != `{"timeout":"2s"}` {
		t.Errorf("Load() = %q, %v; want user's policy only", got, err)
	}
	// A token Consul refuses: Restore starts without the state rather
	// than wait for ever.
	bad, err := NewConsul(catalog.Connection{Address: consul.HTTPAddr(), Token: "6c1f3d2e-0000-4000-8000-000000000000"})
	if err != nil {
		t.Fatal(err)
	}
	if err := Restore(ctx, bad, model.NewBuilder(model.BuilderOptions{}), slog.New(slog.DiscardHandler)); err != nil {
		t.Errorf("Restore with a refused token = %v, want nil (start without the state)", err)
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
