package serve

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"weak"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	"github.com/meshop/meshop/controlplane/translate"
)

// entry is one resource with what serve computed about it once: its
// content hash (its delta version and part of its type's version),
// whether it passed validation, and the names it references (a cluster's
// load assignment, a listener's route configurations). res is the
// compact form of the resource (see compact): the full tree is dropped
// once these are known.
type entry struct {
	name string
	res  cachetypes.Resource
	hash string
	refs []string
	err  error
	// size is the length of its encoding.
	size int
}

func newEntry(r cachetypes.Resource) *entry {
	e := &entry{name: cachev3.GetResourceName(r), res: r, refs: translate.References(r)}
	if err := translate.Validate(r); err != nil {
		e.err = err
	}
	b, err := cachev3.MarshalResource(r)
	if err != nil {
		e.err = errors.Join(e.err, fmt.Errorf("marshal: %w", err))
		return e
	}
	e.hash = cachev3.HashResource(b)[:16]
	e.size = len(b)
	if c, err := compact(r, b); err != nil {
		e.err = errors.Join(e.err, err)
	} else {
		e.res = c
	}
	return e
}

// newEntries makes the entries of resources that no other node shares
// an entry for (the shared ones are made once, in sharedSet).
func newEntries[T cachetypes.Resource](rs []T) []*entry {
	out := make([]*entry, len(rs))
	for i, r := range rs {
		out[i] = newEntry(r)
	}
	return out
}

// entryPool hands out one entry per distinct resource: identical
// resources of different nodes (the otel_collector cluster every sidecar
// has, a local_app cluster or an inbound route with the same port and
// policy) share one entry. It holds them weakly: an entry no snapshot
// uses any more is collected.
type entryPool struct {
	byKey map[string]weak.Pointer[entry]
	// live is how many entries were alive at the last sweep.
	live int
}

func newEntryPool() *entryPool { return &entryPool{byKey: map[string]weak.Pointer[entry]{}} }

// entry returns the pool's entry for a resource equal to r, or a new one.
func (p *entryPool) entry(r cachetypes.Resource) *entry {
	e := newEntry(r)
	if e.err != nil {
		return e
	}
	key := string(r.ProtoReflect().Descriptor().FullName()) + "|" + e.name + "|" + e.hash
	if old := p.byKey[key].Value(); old != nil {
		return old
	}
	p.byKey[key] = weak.Make(e)
	if len(p.byKey) > 2*p.live+64 {
		p.live = 0
		for k, w := range p.byKey {
			if w.Value() == nil {
				delete(p.byKey, k)
			} else {
				p.live++
			}
		}
	}
	return e
}

// entries returns the pool's entries for rs.
func entries[T cachetypes.Resource](p *entryPool, rs []T) []*entry {
	out := make([]*entry, len(rs))
	for i, r := range rs {
		out[i] = p.entry(r)
	}
	return out
}

// fingerprint hashes strings into a short hex key.
type fingerprint struct{ h hash.Hash }

func newFP() *fingerprint { return &fingerprint{sha256.New()} }

func (f *fingerprint) add(parts ...string) {
	for _, p := range parts {
		f.h.Write([]byte(p))
		f.h.Write([]byte{0})
	}
}

func (f *fingerprint) sum() string { return hex.EncodeToString(f.h.Sum(nil)[:12]) }
