package xdsload

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// fleet is the simulated Envoys of one topology against one server.
type fleet struct {
	nodes []*node
	addr  string
}

func newFleet(t Topology, addr string, fl flavor, delta bool) *fleet {
	f := &fleet{addr: addr}
	for _, s := range t.Sims() {
		id, cluster := s.ID, s.Service
		if fl == flavorConsul {
			id = ProxyID(s.ID)
		}
		f.nodes = append(f.nodes, newNode(id, cluster, s.Upstreams, delta, fl))
	}
	return f
}

// callers is the part of the fleet whose service calls svc.
func (f *fleet) callers(svc string) *fleet {
	out := &fleet{addr: f.addr}
	for _, n := range f.nodes {
		if slices.Contains(n.ups, svc) {
			out.nodes = append(out.nodes, n)
		}
	}
	return out
}

// waitGoal installs goal on every node and waits until all meet it or
// within passes. It returns each node's time from t0 to meeting it
// (sorted; nodes that never met it are left out) and how many missed.
// change runs after the goal is installed and returns t0.
func (f *fleet) waitGoal(ctx context.Context, within time.Duration, goal func(*node) bool, change func() (time.Time, error)) (lat []time.Duration, missed int, err error) {
	var left atomic.Int64
	left.Store(int64(len(f.nodes)))
	all := make(chan struct{})
	var once sync.Once
	for _, n := range f.nodes {
		n.setGoal(goal, func() {
			if left.Add(-1) == 0 {
				once.Do(func() { close(all) })
			}
		})
	}
	if len(f.nodes) == 0 {
		once.Do(func() { close(all) })
	}
	t0, err := change()
	if err != nil {
		return nil, 0, err
	}
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-all:
	case <-timer.C:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	for _, n := range f.nodes {
		at := n.metAt()
		n.setGoal(nil, nil)
		if at.IsZero() {
			missed++
			continue
		}
		lat = append(lat, max(0, at.Sub(t0)))
	}
	slices.Sort(lat)
	if missed > 0 {
		var errs []error
		for _, n := range f.nodes {
			if e := n.streamErr(); e != nil {
				errs = append(errs, fmt.Errorf("%s: %w", n.id, e))
				if len(errs) == 3 {
					break
				}
			}
		}
		err = errors.Join(errs...)
	}
	return lat, missed, err
}

// connect opens every node's stream at once (one goroutine each,
// released together) and returns the moment they were released.
func (f *fleet) connect() (time.Time, error) {
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make([]error, len(f.nodes))
	for i, n := range f.nodes {
		wg.Go(func() {
			<-start
			errs[i] = n.start(f.addr)
		})
	}
	t0 := time.Now()
	close(start)
	wg.Wait()
	return t0, errors.Join(errs...)
}

func (f *fleet) close() {
	var wg sync.WaitGroup
	for _, n := range f.nodes {
		wg.Go(n.stop)
	}
	wg.Wait()
}

// Distribution summarises latencies in milliseconds.
type Distribution struct {
	Samples int     `json:"samples"`
	Missed  int     `json:"missed,omitempty"`
	P50     float64 `json:"p50_ms"`
	P99     float64 `json:"p99_ms"`
	Max     float64 `json:"max_ms"`
	// All holds every sample (ms), sorted; the plot draws them.
	All []float64 `json:"all_ms,omitempty"`
}

func distribution(lat []time.Duration, missed int, keep bool) Distribution {
	d := Distribution{Samples: len(lat), Missed: missed}
	if len(lat) == 0 {
		return d
	}
	ms := make([]float64, len(lat))
	for i, l := range lat {
		ms[i] = float64(l.Microseconds()) / 1000
	}
	slices.Sort(ms)
	d.P50, d.P99, d.Max = quantile(ms, 0.50), quantile(ms, 0.99), ms[len(ms)-1]
	if keep {
		d.All = ms
	}
	return d
}

// quantile is the nearest-rank quantile of sorted xs.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	i := int(float64(len(xs))*q+0.999999) - 1
	return xs[max(0, min(i, len(xs)-1))]
}
