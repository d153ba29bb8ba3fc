// Package catalogtest helps tests make catalog snapshots the way the
// catalog watcher does (what did not change keeps its very value), and
// make the random choices of randomized tests.
package catalogtest

import (
	"math/rand/v2"
	"strings"

	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// SetChanged returns m with the entries of cur that differ from m's
// (equal says which do not), and without the keys cur lacks: an unchanged
// entry keeps its value in m, as a watcher's next snapshot keeps it.
func SetChanged[V any](m pmap.Map[V], cur map[string]V, equal func(a, b V) bool) pmap.Map[V] {
	for k, v := range cur {
		if old, ok := m.Get(k); !ok || !equal(old, v) {
			m = m.Set(k, v)
		}
	}
	for k := range m.Keys() {
		if _, ok := cur[k]; !ok {
			m = m.Delete(k)
		}
	}
	return m
}

// Rand is a seeded source of random choices.
type Rand struct{ *rand.Rand }

// NewRand returns a Rand seeded with seed (a failing run's seed replays it).
func NewRand(seed uint64) Rand { return Rand{rand.New(rand.NewPCG(seed, 1))} }

// Pick returns one of from.
func (r Rand) Pick(from []string) string { return from[r.IntN(len(from))] }

// Subset returns some of from (each with probability 1/3), comma-joined,
// as mesh_* meta lists are.
func (r Rand) Subset(from []string) string {
	var out []string
	for _, s := range from {
		if r.IntN(3) == 0 {
			out = append(out, s)
		}
	}
	return strings.Join(out, ",")
}
