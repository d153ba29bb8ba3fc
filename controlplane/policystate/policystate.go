package policystate

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
)

// Prefix is the KV folder holding the last good policy of each service,
// keyed by service name.
const Prefix = "mesh/state/policy/"

// Store keeps the last good policies, keyed by service name. Consul
// implements it over KV; tests may pass a fake.
type Store interface {
	// Load returns every stored policy, keyed by service.
	Load(ctx context.Context) (map[string][]byte, error)
	// Save stores a service's last good policy.
	Save(ctx context.Context, service string, raw []byte) error
	// Delete forgets a service's last good policy (deleting what is not
	// there succeeds).
	Delete(ctx context.Context, service string) error
}

// Consul is a Store in Consul KV, below Prefix.
type Consul struct {
	kv *api.KV
}

// NewConsul returns the Store of the Consul agent of c (whose token may
// write mesh/state/).
func NewConsul(c catalog.Connection) (*Consul, error) {
	client, err := api.NewClient(c.Config())
	if err != nil {
		return nil, err
	}
	return &Consul{kv: client.KV()}, nil
}

// Load implements Store.
func (c *Consul) Load(ctx context.Context) (map[string][]byte, error) {
	pairs, _, err := c.kv.List(Prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("consul: list %s: %w", Prefix, err)
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		if svc := strings.TrimPrefix(p.Key, Prefix); svc != "" { // "": the folder itself
			out[svc] = p.Value
		}
	}
	return out, nil
}

// Save implements Store.
func (c *Consul) Save(ctx context.Context, service string, raw []byte) error {
	if _, err := c.kv.Put(&api.KVPair{Key: Prefix + service, Value: raw}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: put %s%s: %w", Prefix, service, err)
	}
	return nil
}

// Delete implements Store.
func (c *Consul) Delete(ctx context.Context, service string) error {
	if _, err := c.kv.Delete(Prefix+service, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("consul: delete %s%s: %w", Prefix, service, err)
	}
	return nil
}

// Restore loads the stored policies into b; call it before b's first
// Build. While the store fails it retries with backoff (logged once) until
// ctx ends, but for an ACL refusal (HTTP 403): then it logs an error and
// returns nil, and the control plane starts without its last good
// policies rather than not at all. Each stored value the builder ignores
// is logged once, with its key and why.
func Restore(ctx context.Context, s Store, b *model.Builder, log *slog.Logger) error {
	log = log.With("component", "policystate")
	backoff := 100 * time.Millisecond
	failing := false
	for {
		stored, err := loadWithin(ctx, s, 5*time.Second)
		if err == nil {
			if failing {
				log.Info("last good policies readable again")
			}
			ignored := b.SeedLastGood(stored)
			for _, svc := range slices.Sorted(maps.Keys(ignored)) {
				log.Warn("stored last good policy ignored", "key", Prefix+svc, "err", ignored[svc].Error())
			}
			log.Info("last good policies restored", "prefix", Prefix, "restored", len(stored)-len(ignored), "ignored", len(ignored))
			return nil
		}
		if se := (api.StatusError{}); errors.As(err, &se) && se.Code == http.StatusForbidden {
			log.Error("cannot read the last good policies; starting without them (the token needs key_prefix \"mesh/state/\" read)", "err", err.Error())
			return nil
		}
		if !failing {
			failing = true
			log.Warn("cannot read the last good policies; retrying with backoff before the first build", "err", err.Error())
		}
		if !sleep(ctx, jitter(backoff)) {
			return ctx.Err()
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func loadWithin(ctx context.Context, s Store, d time.Duration) (map[string][]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	return s.Load(ctx)
}

// WriterOptions configure a Writer.
type WriterOptions struct {
	Logger *slog.Logger
	// BackoffMin and BackoffMax bound the wait between failed writes
	// (exponential with jitter). Defaults 100ms and 5s.
	BackoffMin, BackoffMax time.Duration
	// WriteTimeout bounds one write (default 5s); FlushTimeout, the last
	// attempt on shutdown (default 2s).
	WriteTimeout, FlushTimeout time.Duration
}

// Writer writes the last good policies to a Store off the caller's path:
// Set records the latest value of a service and returns at once, Run
// writes.
type Writer struct {
	store Store
	log   *slog.Logger
	o     WriterOptions

	mu      sync.Mutex
	pending map[string]change // service → the newest change not yet written
	wake    chan struct{}
}

// change is a value to save, or a delete.
type change struct {
	raw []byte
	del bool
}

// NewWriter returns a Writer to s.
func NewWriter(s Store, o WriterOptions) *Writer {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	o.BackoffMin = cmp.Or(o.BackoffMin, 100*time.Millisecond)
	o.BackoffMax = cmp.Or(o.BackoffMax, 5*time.Second)
	o.WriteTimeout = cmp.Or(o.WriteTimeout, 5*time.Second)
	o.FlushTimeout = cmp.Or(o.FlushTimeout, 2*time.Second)
	return &Writer{store: s, log: o.Logger.With("component", "policystate"), o: o,
		pending: map[string]change{}, wake: make(chan struct{}, 1)}
}

// Set records a service's new last good policy, nil meaning none (back
// to defaults), replacing any change of it not yet written. It never
// blocks: it is model.BuilderOptions.OnLastGood. raw is not modified.
func (w *Writer) Set(service string, raw []byte) {
	w.mu.Lock()
	w.pending[service] = change{raw: raw, del: raw == nil}
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Pending is the number of services whose change is not written yet.
func (w *Writer) Pending() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// Run writes what Set records until ctx ends, then makes one last attempt
// to write what is left (within FlushTimeout). It returns nil.
func (w *Writer) Run(ctx context.Context) error {
	backoff := w.o.BackoffMin
	var failing error
	for {
		select {
		case <-ctx.Done():
			w.flush()
			return nil
		case <-w.wake:
		}
		err := w.writePending(ctx)
		switch {
		case err == nil && failing != nil:
			w.log.Info("last good policies written again", "after", failing.Error())
			failing, backoff = nil, w.o.BackoffMin
		case err != nil && ctx.Err() == nil:
			if failing == nil {
				w.log.Warn("cannot write the last good policies; retrying with backoff", "err", err.Error())
			}
			failing = err
			if !sleep(ctx, jitter(backoff)) {
				w.flush()
				return nil
			}
			backoff = min(2*backoff, w.o.BackoffMax)
			w.poke() // try again
		}
	}
}

func (w *Writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// writePending writes every pending change once, in service order,
// stopping at the first failure (what failed stays pending unless a newer
// change replaced it meanwhile).
func (w *Writer) writePending(ctx context.Context) error {
	w.mu.Lock()
	todo := w.pending
	w.pending = map[string]change{}
	w.mu.Unlock()
	var err error
	for _, svc := range slices.Sorted(maps.Keys(todo)) {
		c := todo[svc]
		if err == nil {
			err = w.write(ctx, svc, c)
			if err == nil {
				continue
			}
		}
		w.mu.Lock() // failed, or not tried: pending again unless replaced
		if _, newer := w.pending[svc]; !newer {
			w.pending[svc] = c
		}
		w.mu.Unlock()
	}
	return err
}

func (w *Writer) write(ctx context.Context, svc string, c change) error {
	ctx, cancel := context.WithTimeout(ctx, w.o.WriteTimeout)
	defer cancel()
	if c.del {
		return w.store.Delete(ctx, svc)
	}
	return w.store.Save(ctx, svc, c.raw)
}

// flush makes one last attempt on shutdown, logging what it could not
// write.
func (w *Writer) flush() {
	if w.Pending() == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.o.FlushTimeout)
	defer cancel()
	if err := w.writePending(ctx); err != nil {
		w.log.Warn("last good policies not written before stopping", "services", w.Pending(), "err", err.Error())
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func jitter(d time.Duration) time.Duration { return d/2 + rand.N(d/2+1) }
