package catalog

import (
	"bytes"
	"context"
	"log/slog"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// Options configure a Watcher.
type Options struct {
	Logger *slog.Logger
	// Wait is the longest a blocking query waits for a change (Consul caps
	// it at 10m). Default 5m.
	Wait time.Duration
	// BackoffMin and BackoffMax bound the wait between failed queries
	// (exponential with jitter). Defaults 100ms and 2s: short enough that
	// a restarted Consul is noticed within about two seconds.
	BackoffMin, BackoffMax time.Duration
	// OnIndex is called with the highest Consul index seen (metrics hook).
	OnIndex func(uint64)
	// Settle is how long, after Consul comes back from an outage, health
	// downgrades and removals of instances that were passing before it
	// are held back. A restarted Consul agent reports its checks critical
	// until they run again; without this, every Envoy would be pushed
	// empty endpoints. Set it to at least the services' check interval
	// (TTL for TTL checks). 0 disables it.
	Settle time.Duration
}

// Status is the watcher's view of its connection to Consul.
type Status struct {
	Reachable bool      `json:"reachable"`
	Since     time.Time `json:"since"`
	LastError string    `json:"last_error,omitempty"`
	Index     uint64    `json:"index"`
	// Synced is true once the first complete snapshot was published.
	Synced bool `json:"synced"`
	// SettlingUntil is set after an outage: until then, instances that
	// were passing before it are not downgraded (see Options.Settle).
	SettlingUntil time.Time `json:"settling_until,omitzero"`
}

// Watcher keeps one blocking query per data set (the service list, each
// service's instances, the policies, the intentions, the Connect CA) and
// publishes an immutable Snapshot
// whenever an answer changes something. It publishes nothing until every
// query has answered once, so the first snapshot is complete; while Consul
// is unreachable it publishes nothing, so consumers keep the last snapshot.
type Watcher struct {
	src  Source
	log  *slog.Logger
	opts Options

	updates chan update

	mu        sync.Mutex
	latest    *Snapshot
	firstSeen time.Time // earliest SeenAt published since the last Take
	notify    chan struct{}
	status    Status
	// failing holds the queries whose last attempt failed; Consul counts
	// as reachable again only when none is left, so one query answering
	// while another fails (as happens while Consul shuts down) does not
	// flap the state.
	failing map[string]time.Time
	// overCapacity is set while the services exceed a bounded source's
	// queries (only Run touches it).
	overCapacity bool
}

// NewWatcher returns a watcher reading from src. Call Run to start it.
func NewWatcher(src Source, o Options) *Watcher {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Wait <= 0 {
		o.Wait = 5 * time.Minute
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = 100 * time.Millisecond
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = max(2*time.Second, o.BackoffMin)
	}
	return &Watcher{
		src:     src,
		log:     o.Logger.With("component", "catalog"),
		opts:    o,
		updates: make(chan update, 64),
		notify:  make(chan struct{}, 1),
		status:  Status{Reachable: true, Since: time.Now()},
		failing: map[string]time.Time{},
	}
}

// Changed receives a value when a new snapshot was published since the
// last Take. It is the same channel for the watcher's whole life.
func (w *Watcher) Changed() <-chan struct{} { return w.notify }

// Take returns the latest snapshot (nil before the first) and the earliest
// time a change in it was seen in Consul since the previous Take: the
// start of the change-to-push latency.
func (w *Watcher) Take() (*Snapshot, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	first := w.firstSeen
	w.firstSeen = time.Time{}
	return w.latest, first
}

// Status returns the connection status.
func (w *Watcher) Status() Status {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.status
}

type updateKind int

const (
	updServices updateKind = iota
	updInstances
	updPolicies
	updIntentions
	updCA
	updFailed
	updUnchanged // a query answered without news (its wait elapsed)
)

type update struct {
	kind     updateKind
	query    string // which blocking query: "services", "policies", "intentions", "ca", "instances/<name>"
	service  string
	services []string
	insts    []Instance
	raw      map[string][]byte // policies or intentions
	ca       CA
	index    uint64
	asked    time.Time // when the query was sent
	at       time.Time // when its answer arrived
	err      error
}

// Run watches until ctx ends. It returns ctx's error.
func (w *Watcher) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel() // runs before wg.Wait: stop the loops, then wait for them

	start := func(f func(context.Context)) context.CancelFunc {
		c, stop := context.WithCancel(ctx)
		wg.Go(func() { f(c) })
		return stop
	}
	start(w.watchServices)
	start(func(ctx context.Context) { watchWhole(w, ctx, "policies", updPolicies, w.src.Policies, setRaw) })
	start(func(ctx context.Context) { watchWhole(w, ctx, "intentions", updIntentions, w.src.Intentions, setRaw) })
	start(func(ctx context.Context) {
		watchWhole(w, ctx, "ca", updCA, w.src.CA, func(u *update, ca CA) { u.ca = ca })
	})

	st := state{
		known:    map[string]context.CancelFunc{},
		answered: map[string]bool{},
	}
	var settleTimer *time.Timer
	var settleC <-chan time.Time
	defer func() {
		if settleTimer != nil {
			settleTimer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			for _, stop := range st.known {
				stop()
			}
			return ctx.Err()
		case <-settleC:
			settleC, settleTimer = nil, nil
			held := st.held
			st.baseline, st.held = nil, 0
			st.settled = true
			w.setSettling(time.Time{})
			w.log.Info("settle period over; publishing Consul's view", "downgrades_applied", held)
			w.maybePublish(&st, time.Now())
		case u := <-w.updates:
			wasReachable := w.Status().Reachable
			switch u.kind {
			case updFailed:
				w.failed(u.query, u.err)
			case updUnchanged:
				w.succeeded(u.query, u.index, u.asked)
			case updServices:
				st.servicesAnswered = true
				want := map[string]bool{}
				for _, n := range u.services {
					want[n] = true
					if _, ok := st.known[n]; !ok {
						name := n
						st.known[n] = start(func(c context.Context) { w.watchInstances(c, name) })
					}
				}
				for n, stop := range st.known {
					if !want[n] {
						stop()
						w.forget("instances/" + n)
						delete(st.known, n)
						delete(st.answered, n)
						st.services = st.services.Delete(n)
						st.changed = true
					}
				}
				w.warnOverCapacity(len(st.known))
				w.succeeded(u.query, u.index, u.asked)
			case updInstances:
				if _, ok := st.known[u.service]; !ok {
					continue // a late answer for a service already gone
				}
				st.answered[u.service] = true
				// An unchanged answer keeps the published slice, so
				// consumers see the service as unchanged.
				if old, ok := st.services.Get(u.service); !ok || !reflect.DeepEqual(old, u.insts) {
					st.services = st.services.Set(u.service, u.insts)
					st.changed = true
				}
				w.succeeded(u.query, u.index, u.asked)
			case updPolicies:
				st.policiesAnswered = true
				st.setRaw(&st.policies, u.raw)
				w.succeeded(u.query, u.index, u.asked)
			case updIntentions:
				st.intentionsAnswered = true
				st.setRaw(&st.intentions, u.raw)
				w.succeeded(u.query, u.index, u.asked)
			case updCA:
				st.caAnswered = true
				switch {
				case u.ca.TrustDomain == "" && st.ca.TrustDomain != "":
					// Mutual TLS never falls back to plaintext once it was
					// on: a CA that stops giving a trust domain (Connect
					// turned off) keeps the last one, as an outage keeps
					// the last snapshot.
					w.log.Error("Consul's Connect CA gives no trust domain any more (Connect off?); the last trust domain and roots stay in force",
						"trust_domain", st.ca.TrustDomain)
				case !st.ca.Equal(u.ca):
					st.ca = u.ca
					st.changed = true
				}
				w.succeeded(u.query, u.index, u.asked)
			}
			st.index = max(st.index, u.index)
			reachable := w.Status().Reachable
			switch {
			case wasReachable && !reachable && w.opts.Settle > 0:
				// Remember what Envoys run now: the baseline a restarted
				// Consul is compared with.
				if latest, _ := w.peek(); latest != nil && st.baseline == nil {
					st.baseline = latest
				}
			case !wasReachable && reachable && st.baseline != nil:
				if settleTimer != nil {
					settleTimer.Stop()
				}
				settleTimer = time.NewTimer(w.opts.Settle)
				settleC = settleTimer.C
				w.setSettling(time.Now().Add(w.opts.Settle))
				w.log.Info("consul is back; holding health downgrades and removals of instances that were passing before the outage until its checks have run again",
					"settle", w.opts.Settle.String())
			}
			if u.kind == updFailed || !st.synced() {
				continue
			}
			w.maybePublish(&st, u.at)
		}
	}
}

// state is Run's own view of Consul; only Run touches it. Its maps are
// the persistent maps snapshots are published with.
type state struct {
	services   pmap.Map[[]Instance]
	policies   pmap.Map[[]byte]
	intentions pmap.Map[[]byte]
	ca         CA
	known      map[string]context.CancelFunc // services with a running query
	answered   map[string]bool
	// The queries that answered at least once.
	servicesAnswered, policiesAnswered, intentionsAnswered, caAnswered bool
	index                                                              uint64
	// baseline is what was published when Consul became unreachable;
	// while settling after it came back, instances that were passing in
	// it stay passing (held) until Consul's checks had time to run.
	baseline *Snapshot
	held     int
	// changed is set when an answer changed the view since the last
	// publish: comparing only what an answer touched keeps the cost of a
	// change independent of the catalog's size.
	changed bool
	// settled is set when a settle period ended: what was held back may
	// differ from what Consul says.
	settled bool
}

func (st *state) synced() bool {
	if !st.servicesAnswered || !st.policiesAnswered || !st.intentionsAnswered || !st.caAnswered {
		return false
	}
	for n := range st.known {
		if !st.answered[n] {
			return false
		}
	}
	return true
}

// setRaw updates *m (the policies or the intentions) to an answer of
// raw values, noting whether it changed.
func (st *state) setRaw(m *pmap.Map[[]byte], answer map[string][]byte) {
	if next, changed := syncRaw(*m, answer); changed {
		*m = next
		st.changed = true
	}
}

// maybePublish publishes the current view when it differs from the last
// published snapshot.
func (w *Watcher) maybePublish(st *state, seen time.Time) {
	services := st.services
	if st.baseline != nil {
		var held int
		services, held = holdDowngrades(st.services, st.baseline.Services)
		if held != st.held {
			w.log.Info("holding instance downgrades while Consul settles", "held", held)
			st.held = held
		}
	}
	latest, _ := w.peek()
	if st.baseline == nil && latest != nil && !st.changed && !st.settled {
		return
	}
	if (st.baseline != nil || st.settled) && latest != nil && sameView(latest, services, st) {
		st.settled = false
		return
	}
	st.changed, st.settled = false, false
	// The maps are persistent and the slices and values are never
	// modified after a query returned them: the snapshot shares them.
	snap := &Snapshot{Index: st.index, SeenAt: seen, Services: services, Policies: st.policies,
		Intentions: st.intentions, CA: st.ca}
	w.mu.Lock()
	w.latest = snap
	if w.firstSeen.IsZero() || seen.Before(w.firstSeen) {
		w.firstSeen = seen
	}
	if !w.status.Synced {
		w.status.Synced = true
		w.log.Info("catalog synced", "index", st.index, "services", snap.Services.Len(), "policies", snap.Policies.Len(),
			"intentions", snap.Intentions.Len(), "trust_domain", snap.CA.TrustDomain)
	}
	w.mu.Unlock()
	if w.opts.OnIndex != nil {
		w.opts.OnIndex(st.index)
	}
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// holdDowngrades returns cur with every instance that was passing in base
// kept passing (and kept at all, if it disappeared), and how many were
// held. Only services whose slices differ between the two can hold
// anything, so it costs what changed since base. Slices are new; neither
// input is modified.
func holdDowngrades(cur, base pmap.Map[[]Instance]) (pmap.Map[[]Instance], int) {
	out := cur
	held := 0
	for svc := range pmap.Diff(base, cur, SameInstances) {
		was, _ := base.Get(svc)
		now, _ := cur.Get(svc)
		byID := make(map[string]int, len(now))
		for i, in := range now {
			byID[in.ID] = i
		}
		var merged []Instance
		for _, b := range was {
			if !b.Passing() {
				continue
			}
			i, ok := byID[b.ID]
			if ok && now[i].Passing() {
				continue
			}
			if merged == nil {
				merged = slices.Clone(now)
			}
			if ok {
				merged[i].Status = b.Status
			} else {
				merged = append(merged, b)
			}
			held++
		}
		if merged != nil {
			slices.SortFunc(merged, func(a, b Instance) int { return strings.Compare(a.ID, b.ID) })
			out = out.Set(svc, merged)
		}
	}
	return out, held
}

// sameView reports whether snap holds these services and st's other
// data sets.
func sameView(snap *Snapshot, services pmap.Map[[]Instance], st *state) bool {
	return pmap.Equal(snap.Services, services, func(a, b []Instance) bool { return reflect.DeepEqual(a, b) }) &&
		pmap.Equal(snap.Policies, st.policies, bytes.Equal) &&
		pmap.Equal(snap.Intentions, st.intentions, bytes.Equal) &&
		snap.CA.Equal(st.ca)
}

// syncRaw returns cur updated to an answer of raw values (the policies'
// KV folder, the intentions' config entries), and whether anything
// changed. Such an answer is the whole data set, so this costs O(its
// size): these change rarely, unlike instances.
func syncRaw(cur pmap.Map[[]byte], next map[string][]byte) (pmap.Map[[]byte], bool) {
	out := cur
	for k, v := range next {
		if old, ok := out.Get(k); !ok || !bytes.Equal(old, v) {
			out = out.Set(k, v)
		}
	}
	for k := range cur.Keys() {
		if _, ok := next[k]; !ok {
			out = out.Delete(k)
		}
	}
	return out, out != cur
}

// boundedSource is a Source that holds at most QueryCapacity blocking
// queries at once (ConsulSource: MaxConns connections).
type boundedSource interface{ QueryCapacity() int }

// wholeQueries is the number of blocking queries besides the services'
// instances: the service list, the policies, the intentions, the CA.
const wholeQueries = 4

// warnOverCapacity logs, when the number of services first exceeds what
// the source can hold at once, that some changes will be seen late.
func (w *Watcher) warnOverCapacity(services int) {
	b, ok := w.src.(boundedSource)
	over := ok && services+wholeQueries > b.QueryCapacity()
	if over && !w.overCapacity {
		w.log.Warn("more services than blocking queries the connections to Consul can hold at once: changes to some are seen late (up to the blocking wait); over plain HTTP, use Consul's HTTPS listener (HTTP/2, 250 queries per connection)",
			"services", services, "queries_at_once", b.QueryCapacity())
	}
	w.overCapacity = over
}

func (w *Watcher) peek() (*Snapshot, time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.latest, w.firstSeen
}

func (w *Watcher) setSettling(until time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.SettlingUntil = until
}

// failed and succeeded log state changes only: one line when Consul
// becomes unreachable, one when it is back, nothing per retry.
func (w *Watcher) failed(query string, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.LastError = err.Error()
	w.failing[query] = time.Now()
	if !w.status.Reachable {
		return
	}
	w.status.Reachable = false
	w.status.Since = time.Now()
	w.log.Warn("consul unreachable; keeping the last snapshot and retrying with backoff", "err", err)
}

func (w *Watcher) succeeded(query string, index uint64, asked time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.status.Index = max(w.status.Index, index)
	// Only a query sent after its own last failure proves it recovered.
	if failedAt, ok := w.failing[query]; ok && !asked.Before(failedAt) {
		delete(w.failing, query)
	}
	w.recoveredLocked()
}

// forget drops a query that stopped (its service is gone).
func (w *Watcher) forget(query string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.failing, query)
	w.recoveredLocked()
}

func (w *Watcher) recoveredLocked() {
	if w.status.Reachable || len(w.failing) > 0 {
		return
	}
	down := time.Since(w.status.Since)
	w.status.Reachable = true
	w.status.Since = time.Now()
	w.log.Info("consul reachable again", "down_for", down.Round(time.Millisecond).String(), "last_err", w.status.LastError)
	w.status.LastError = ""
}

func (w *Watcher) send(ctx context.Context, u update) {
	select {
	case w.updates <- u:
	case <-ctx.Done():
	}
}

// loop runs one blocking query forever with Consul's index rules: wait on
// the last index, reset when the index goes backwards (a restored or new
// cluster), never wait on 0 twice in a row (that would not block), and
// after a failure ask again without blocking.
func (w *Watcher) loop(ctx context.Context, query string, q func(ctx context.Context, index uint64, asked time.Time) (uint64, error)) {
	var index uint64
	backoff := w.opts.BackoffMin
	for ctx.Err() == nil {
		next, err := q(ctx, index, time.Now())
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			w.send(ctx, update{kind: updFailed, query: query, err: err})
			// Ask without blocking next time: the answer is at once the
			// proof that Consul is back and the state we missed.
			index = 0
			d := backoff/2 + rand.N(backoff/2+1)
			backoff = min(2*backoff, w.opts.BackoffMax)
			select {
			case <-ctx.Done():
				return
			case <-time.After(d):
			}
			continue
		}
		backoff = w.opts.BackoffMin
		switch {
		case next < index:
			index = 0
		case next == 0:
			index = 1
		default:
			index = next
		}
	}
}

func (w *Watcher) watchServices(ctx context.Context) {
	w.loop(ctx, "services", func(ctx context.Context, index uint64, asked time.Time) (uint64, error) {
		names, next, err := w.src.Services(ctx, index, w.opts.Wait)
		if err != nil {
			return 0, err
		}
		w.send(ctx, update{kind: updServices, query: "services", services: names, index: next, asked: asked, at: time.Now()})
		return next, nil
	})
}

func (w *Watcher) watchInstances(ctx context.Context, service string) {
	query := "instances/" + service
	w.loop(ctx, query, func(ctx context.Context, index uint64, asked time.Time) (uint64, error) {
		insts, next, err := w.src.Instances(ctx, service, index, w.opts.Wait)
		if err != nil {
			return 0, err
		}
		if next == index { // wait elapsed, nothing new
			w.send(ctx, update{kind: updUnchanged, query: query, index: next, asked: asked})
			return next, nil
		}
		w.send(ctx, update{kind: updInstances, query: query, service: service, insts: insts, index: next, asked: asked, at: time.Now()})
		return next, nil
	})
}

// watchWhole runs the blocking query of a data set Consul answers whole
// (the policies, the intentions, the CA) and sends each new answer as an
// update of kind, put into it by set.
func watchWhole[T any](w *Watcher, ctx context.Context, query string, kind updateKind,
	fetch func(context.Context, uint64, time.Duration) (T, uint64, error), set func(*update, T)) {
	w.loop(ctx, query, func(ctx context.Context, index uint64, asked time.Time) (uint64, error) {
		v, next, err := fetch(ctx, index, w.opts.Wait)
		if err != nil {
			return 0, err
		}
		if next == index {
			w.send(ctx, update{kind: updUnchanged, query: query, index: next, asked: asked})
			return next, nil
		}
		u := update{kind: kind, query: query, index: next, asked: asked, at: time.Now()}
		set(&u, v)
		w.send(ctx, u)
		return next, nil
	})
}

func setRaw(u *update, raw map[string][]byte) { u.raw = raw }
