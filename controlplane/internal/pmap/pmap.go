// Package pmap is a persistent map from strings to values: Set and Delete
// return a new map and leave the old one as it was, sharing every part of
// it the change did not touch. Maps are never modified, so any number of
// goroutines may read them without locks, and a new version costs
// O(log n) time and memory, not a copy.
//
// Because unchanged parts are shared, Diff finds what changed between two
// versions of one map by skipping the subtrees they share: its cost grows
// with the number of changed keys, not with the size of the map.
//
// The map is a hash array mapped trie (HAMT): each node has up to 32
// slots, chosen by the next 5 bits of the key's hash; a slot holds one
// entry or a subtree. Keys whose 64-bit hashes collide end up in a list at
// the bottom. Delete collapses a subtree left with one entry, so the shape
// depends only on the keys, not on the order they came in.
package pmap

import (
	"bytes"
	"encoding/json"
	"hash/maphash"
	"iter"
	"math/bits"
	"slices"
)

// Map is a persistent map. The zero value is an empty map ready to use.
// Maps are small values: a == b reports whether they are the same version
// (Delete of an absent key returns the map itself, every Set makes a new
// version); Equal compares contents.
type Map[V any] struct {
	root *node[V]
	len  int
}

type node[V any] struct {
	bitmap uint32    // which of the 32 slots are used (unused below hashBits)
	slots  []slot[V] // the used slots in bit order, or the collision list
}

// slot is a subtree or one entry: exactly one of the two is set. A slot is
// two pointers, so copying a node on the way to a change is cheap, and
// every copy shares the entries.
type slot[V any] struct {
	sub   *node[V]
	entry *entry[V]
}

// entry is one key and its value. It keeps the key's hash, to move down a
// level without hashing again.
type entry[V any] struct {
	key  string
	hash uint64
	val  V
}

const (
	bitsPerLevel = 5
	hashBits     = 64
)

// seed is fixed for the process: maps share structure only within one
// process, and Diff needs every map to place a key in the same slot.
var seed = maphash.MakeSeed()

func hash(k string) uint64 { return maphash.String(seed, k) }

// bit is the bitmap bit of a hash at a level.
func bit(h uint64, shift uint) uint32 { return 1 << (h >> shift & (1<<bitsPerLevel - 1)) }

// index is the position in slots of a used bit.
func (n *node[V]) index(b uint32) int { return bits.OnesCount32(n.bitmap & (b - 1)) }

// FromMap returns a map with the entries of m.
func FromMap[V any](m map[string]V) Map[V] {
	var out Map[V]
	for k, v := range m {
		out = out.Set(k, v)
	}
	return out
}

// Len returns the number of entries.
func (m Map[V]) Len() int { return m.len }

// Get returns the value of k and whether k is in the map.
func (m Map[V]) Get(k string) (V, bool) {
	if e := get(m.root, hash(k), k); e != nil {
		return e.val, true
	}
	var zero V
	return zero, false
}

// get returns the entry of k, or nil.
func get[V any](n *node[V], h uint64, k string) *entry[V] {
	for shift := uint(0); n != nil; shift += bitsPerLevel {
		if shift >= hashBits {
			return find(n.slots, k)
		}
		b := bit(h, shift)
		if n.bitmap&b == 0 {
			return nil
		}
		s := n.slots[n.index(b)]
		if s.entry != nil {
			if s.entry.key == k {
				return s.entry
			}
			return nil
		}
		n = s.sub
	}
	return nil
}

// find returns the entry of k in a collision list, or nil.
func find[V any](list []slot[V], k string) *entry[V] {
	for _, s := range list {
		if s.entry.key == k {
			return s.entry
		}
	}
	return nil
}

// Set returns a map in which k has the value v.
func (m Map[V]) Set(k string, v V) Map[V] {
	root, added := set(m.root, 0, &entry[V]{key: k, hash: hash(k), val: v})
	if added {
		m.len++
	}
	m.root = root
	return m
}

// set returns a copy of n (nil: empty) with e, and whether its key is new.
func set[V any](n *node[V], shift uint, e *entry[V]) (*node[V], bool) {
	if n == nil {
		n = &node[V]{}
	}
	if shift >= hashBits {
		for i, s := range n.slots {
			if s.entry.key == e.key {
				return n.with(i, slot[V]{entry: e}), false
			}
		}
		return &node[V]{slots: append(slices.Clip(n.slots), slot[V]{entry: e})}, true
	}
	b := bit(e.hash, shift)
	i := n.index(b)
	if n.bitmap&b == 0 {
		// Exactly sized: every node of a large map stays in memory.
		slots := make([]slot[V], len(n.slots)+1)
		copy(slots, n.slots[:i])
		slots[i] = slot[V]{entry: e}
		copy(slots[i+1:], n.slots[i:])
		return &node[V]{bitmap: n.bitmap | b, slots: slots}, true
	}
	switch s := n.slots[i]; {
	case s.sub != nil:
		sub, added := set(s.sub, shift+bitsPerLevel, e)
		return n.with(i, slot[V]{sub: sub}), added
	case s.entry.key == e.key:
		return n.with(i, slot[V]{entry: e}), false
	default: // two keys in one slot: push both one level down
		sub, _ := set(nil, shift+bitsPerLevel, s.entry)
		sub, _ = set(sub, shift+bitsPerLevel, e)
		return n.with(i, slot[V]{sub: sub}), true
	}
}

// with returns a copy of n with slot i replaced.
func (n *node[V]) with(i int, s slot[V]) *node[V] {
	c := &node[V]{bitmap: n.bitmap, slots: slices.Clone(n.slots)}
	c.slots[i] = s
	return c
}

// Delete returns a map without k.
func (m Map[V]) Delete(k string) Map[V] {
	root, removed := del(m.root, 0, hash(k), k)
	if removed {
		m.len--
		m.root = root
	}
	return m
}

// del returns a copy of n without k (nil when nothing is left), and
// whether k was there; when it was not, n itself.
func del[V any](n *node[V], shift uint, h uint64, k string) (*node[V], bool) {
	if n == nil {
		return nil, false
	}
	if shift >= hashBits {
		i := slices.IndexFunc(n.slots, func(s slot[V]) bool { return s.entry.key == k })
		if i < 0 {
			return n, false
		}
		return n.without(i, 0), true
	}
	b := bit(h, shift)
	if n.bitmap&b == 0 {
		return n, false
	}
	i := n.index(b)
	s := n.slots[i]
	if s.entry != nil {
		if s.entry.key != k {
			return n, false
		}
		return n.without(i, b), true
	}
	sub, removed := del(s.sub, shift+bitsPerLevel, h, k)
	switch {
	case !removed:
		return n, false
	case sub == nil:
		return n.without(i, b), true
	case len(sub.slots) == 1 && sub.slots[0].entry != nil:
		return n.with(i, sub.slots[0]), true // a lone entry moves up
	default:
		return n.with(i, slot[V]{sub: sub}), true
	}
}

// without returns a copy of n without slot i (bitmap bit b), or nil when
// it was the last.
func (n *node[V]) without(i int, b uint32) *node[V] {
	if len(n.slots) == 1 {
		return nil
	}
	return &node[V]{bitmap: n.bitmap &^ b, slots: slices.Delete(slices.Clone(n.slots), i, i+1)}
}

// All returns every entry, in no particular order (the same for equal
// maps within one process).
func (m Map[V]) All() iter.Seq2[string, V] {
	return func(yield func(string, V) bool) {
		walk(slot[V]{sub: m.root}, func(e *entry[V]) bool { return yield(e.key, e.val) })
	}
}

// Keys returns every key, in the order of All; slices.Sorted(m.Keys())
// sorts them.
func (m Map[V]) Keys() iter.Seq[string] {
	return func(yield func(string) bool) {
		walk(slot[V]{sub: m.root}, func(e *entry[V]) bool { return yield(e.key) })
	}
}

// walk calls f for every entry in a slot until f returns false; it
// returns false if f did.
func walk[V any](s slot[V], f func(*entry[V]) bool) bool {
	if s.entry != nil {
		return f(s.entry)
	}
	if s.sub == nil {
		return true
	}
	for _, c := range s.sub.slots {
		if !walk(c, f) {
			return false
		}
	}
	return true
}

// Diff returns the keys whose entries differ between old and new: added,
// removed, or with values that same (which must be symmetric) does not
// hold equal. Subtrees and entries the two maps share are skipped, so
// when new was made from old by a few Sets and Deletes, Diff costs about
// as much as they did. Each key is returned once, in no particular order.
func Diff[V any](old, new Map[V], same func(a, b V) bool) iter.Seq[string] {
	return func(yield func(string) bool) {
		d := differ[V]{same: same, yield: yield}
		d.nodes(old.root, new.root, 0)
	}
}

// Equal reports whether a and b hold the same keys with values that same
// holds equal; like Diff, it skips what they share.
func Equal[V any](a, b Map[V], same func(x, y V) bool) bool {
	for range Diff(a, b, same) {
		return false
	}
	return true
}

type differ[V any] struct {
	same  func(a, b V) bool
	yield func(string) bool
}

// nodes compares two nodes at the same depth (nil: empty). Like every
// differ method, it returns false when yield asked to stop.
func (d differ[V]) nodes(a, b *node[V], shift uint) bool {
	switch {
	case a == b:
		return true
	case a == nil:
		return d.keys(slot[V]{sub: b})
	case b == nil:
		return d.keys(slot[V]{sub: a})
	case shift >= hashBits:
		return d.lists(entries(slot[V]{sub: a}), entries(slot[V]{sub: b}))
	}
	for used := a.bitmap | b.bitmap; used != 0; used &= used - 1 {
		bt := used & -used
		var sa, sb *slot[V]
		if a.bitmap&bt != 0 {
			sa = &a.slots[a.index(bt)]
		}
		if b.bitmap&bt != 0 {
			sb = &b.slots[b.index(bt)]
		}
		if !d.slots(sa, sb, shift) {
			return false
		}
	}
	return true
}

// slots compares the slots at one position of two nodes (nil: unused).
func (d differ[V]) slots(a, b *slot[V], shift uint) bool {
	switch {
	case a == nil:
		return d.keys(*b)
	case b == nil:
		return d.keys(*a)
	case a.sub != nil && b.sub != nil:
		return d.nodes(a.sub, b.sub, shift+bitsPerLevel)
	case a.entry == b.entry:
		return true
	case a.entry != nil && b.entry != nil:
		if a.entry.key != b.entry.key {
			return d.yield(a.entry.key) && d.yield(b.entry.key)
		}
		return d.same(a.entry.val, b.entry.val) || d.yield(a.entry.key)
	}
	// One entry against a subtree: keys were added next to it, or all
	// but one of the subtree's were deleted. One side has one entry, so
	// comparing entry by entry costs the size of the other.
	return d.lists(entries(*a), entries(*b))
}

func (d differ[V]) keys(s slot[V]) bool {
	return walk(s, func(e *entry[V]) bool { return d.yield(e.key) })
}

// lists compares two lists of entries by key.
func (d differ[V]) lists(a, b []*entry[V]) bool {
	for _, x := range a {
		i := slices.IndexFunc(b, func(y *entry[V]) bool { return y.key == x.key })
		if (i < 0 || !d.same(x.val, b[i].val)) && !d.yield(x.key) {
			return false
		}
	}
	for _, y := range b {
		if !slices.ContainsFunc(a, func(x *entry[V]) bool { return x.key == y.key }) && !d.yield(y.key) {
			return false
		}
	}
	return true
}

// entries lists the entries in a slot.
func entries[V any](s slot[V]) []*entry[V] {
	var out []*entry[V]
	walk(s, func(e *entry[V]) bool {
		out = append(out, e)
		return true
	})
	return out
}

// MarshalJSON writes the map as a JSON object with sorted keys, as
// encoding/json writes a map[string]V.
func (m Map[V]) MarshalJSON() ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteByte('{')
	for i, k := range slices.Sorted(m.Keys()) {
		v, _ := m.Get(k)
		key, err := json.Marshal(k)
		if err != nil {
			return nil, err
		}
		val, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(key)
		buf.WriteByte(':')
		buf.Write(val)
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}
