package pmap

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestAgainstMap applies random Sets and Deletes to a Map and a plain map
// side by side, keeping every version, and checks after each step that
// the new version holds what the plain map holds, that the previous
// version did not change, and that Diff between versions names exactly
// the keys that differ.
func TestAgainstMap(t *testing.T) {
	for _, keys := range []int{3, 40, 2000} { // one node, two levels, three
		t.Run(fmt.Sprint(keys, " keys"), func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, uint64(keys)))
			var versions []Map[int]
			var plains []map[string]int
			m, plain := Map[int]{}, map[string]int{}
			for step := range 6 * keys {
				k := fmt.Sprintf("k%d", rng.IntN(keys))
				if rng.IntN(3) == 0 {
					m = m.Delete(k)
					delete(plain, k)
				} else {
					v := rng.IntN(4) // small values: some Sets keep the value
					m = m.Set(k, v)
					plain[k] = v
				}
				versions = append(versions, m)
				plains = append(plains, maps.Clone(plain))
				if step%max(1, keys/10) != 0 {
					continue
				}
				checkEqual(t, m, plain)
				back := rng.IntN(len(versions))
				checkEqual(t, versions[back], plains[back]) // old versions are untouched
				checkDiff(t, versions[back], m, plains[back], plain)
				checkDiff(t, m, versions[back], plain, plains[back])
			}
			checkDiff(t, Map[int]{}, m, nil, plain)
			checkDiff(t, m, Map[int]{}, plain, nil)
			for k := range plain {
				m = m.Delete(k)
			}
			if m.Len() != 0 || m.root != nil {
				t.Errorf("after deleting every key: Len %d, root %v", m.Len(), m.root)
			}
		})
	}
}

func checkEqual(t *testing.T, m Map[int], want map[string]int) {
	t.Helper()
	if m.Len() != len(want) {
		t.Fatalf("Len = %d, want %d", m.Len(), len(want))
	}
	got := map[string]int{}
	for k, v := range m.All() {
		if _, dup := got[k]; dup {
			t.Fatalf("All yields %q twice", k)
		}
		got[k] = v
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("All (-want +got):\n%s", diff)
	}
	for k, v := range want {
		if g, ok := m.Get(k); !ok || g != v {
			t.Fatalf("Get(%q) = %d, %v; want %d", k, g, ok, v)
		}
	}
	if _, ok := m.Get("absent"); ok {
		t.Fatal(`Get("absent") found it`)
	}
}

func checkDiff(t *testing.T, a, b Map[int], pa, pb map[string]int) {
	t.Helper()
	var want []string
	for k, v := range pa {
		if w, ok := pb[k]; !ok || w != v {
			want = append(want, k)
		}
	}
	for k := range pb {
		if _, ok := pa[k]; !ok {
			want = append(want, k)
		}
	}
	slices.Sort(want)
	got := slices.Collect(Diff(a, b, func(x, y int) bool { return x == y }))
	slices.Sort(got)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("Diff (-want +got):\n%s", diff)
	}
}

// TestDiffSkipsSharedSubtrees: after one Set in a large map, Diff compares
// only the values on the changed path, not every value.
func TestDiffSkipsSharedSubtrees(t *testing.T) {
	var m Map[int]
	for i := range 10000 {
		m = m.Set(fmt.Sprint(i), i)
	}
	next := m.Set("17", -1).Set("new", 0).Delete("42")
	compared := 0
	got := slices.Sorted(Diff(m, next, func(x, y int) bool { compared++; return x == y }))
	if diff := cmp.Diff([]string{"17", "42", "new"}, got); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
	if compared > 3*32 { // at most the entries of the three changed leaf nodes
		t.Errorf("Diff compared %d values; it should skip shared subtrees", compared)
	}
}

// TestCollisions: keys whose hashes are equal share a list at the bottom
// of the trie. Real 64-bit hashes almost never collide, so the test sets
// the hashes itself.
func TestCollisions(t *testing.T) {
	const h = 0x0123456789abcdef
	put := func(m Map[int], k string, v int) Map[int] {
		root, added := set(m.root, 0, &entry[int]{key: k, hash: h, val: v})
		if added {
			m.len++
		}
		m.root = root
		return m
	}
	lookup := func(m Map[int], k string) (int, bool) {
		if e := get(m.root, h, k); e != nil {
			return e.val, true
		}
		return 0, false
	}
	remove := func(m Map[int], k string) Map[int] {
		root, removed := del(m.root, 0, h, k)
		if removed {
			m.len--
			m.root = root
		}
		return m
	}
	m1 := put(put(put(Map[int]{}, "a", 1), "b", 2), "c", 3)
	m2 := remove(put(m1, "b", 20), "a")
	for _, tt := range []struct {
		m    Map[int]
		want map[string]int
	}{{m1, map[string]int{"a": 1, "b": 2, "c": 3}}, {m2, map[string]int{"b": 20, "c": 3}}} {
		if tt.m.Len() != len(tt.want) {
			t.Errorf("Len = %d, want %d", tt.m.Len(), len(tt.want))
		}
		for k, v := range tt.want {
			if got, ok := lookup(tt.m, k); !ok || got != v {
				t.Errorf("get(%q) = %d, %v; want %d", k, got, ok, v)
			}
		}
		if diff := cmp.Diff(tt.want, maps.Collect(tt.m.All())); diff != "" {
			t.Errorf("All (-want +got):\n%s", diff)
		}
	}
	if _, ok := lookup(m2, "a"); ok {
		t.Error("a is still there after delete")
	}
	got := slices.Sorted(Diff(m1, m2, func(x, y int) bool { return x == y }))
	if diff := cmp.Diff([]string{"a", "b"}, got); diff != "" {
		t.Errorf("Diff (-want +got):\n%s", diff)
	}
	if m3 := remove(remove(m2, "b"), "c"); m3.root != nil || m3.Len() != 0 {
		t.Errorf("empty map after deleting every key: root %v, Len %d", m3.root, m3.Len())
	}
}

// TestShapeDependsOnlyOnKeys: the same keys inserted in another order, or
// reached through deletes, give the same trie, so nothing is left behind
// by deletes.
func TestShapeDependsOnlyOnKeys(t *testing.T) {
	keys := make([]string, 500)
	for i := range keys {
		keys[i] = fmt.Sprint("svc-", i)
	}
	var a, b Map[int]
	for _, k := range keys {
		a = a.Set(k, 1)
	}
	for _, i := range rand.New(rand.NewPCG(2, 3)).Perm(len(keys)) {
		b = b.Set(keys[i], 1).Set("extra-"+keys[i], 1)
	}
	for _, k := range keys {
		b = b.Delete("extra-" + k)
	}
	if diff := cmp.Diff(shape(a.root), shape(b.root)); diff != "" {
		t.Errorf("shapes differ (-inserted in order +shuffled, with deletes):\n%s", diff)
	}
}

// shape renders a trie's structure.
func shape(n *node[int]) any {
	var out []any
	for _, s := range n.slots {
		if s.sub != nil {
			out = append(out, shape(s.sub))
		} else {
			out = append(out, s.entry.key)
		}
	}
	return []any{n.bitmap, out}
}

// TestMarshalJSON: the same JSON as a plain map.
func TestMarshalJSON(t *testing.T) {
	plain := map[string][]string{"b": {"x"}, "a": nil, "<&>": {}}
	for _, p := range []map[string][]string{plain, {}} {
		want, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := json.Marshal(struct{ M Map[[]string] }{FromMap(p)})
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != `{"M":`+string(want)+`}` {
			t.Errorf("got %s, want the map as %s", got, want)
		}
	}
}

func TestEqual(t *testing.T) {
	eq := func(x, y int) bool { return x == y }
	a := FromMap(map[string]int{"x": 1, "y": 2})
	for _, tt := range []struct {
		b    Map[int]
		want bool
	}{
		{a, true},
		{a.Set("x", 1), true},
		{FromMap(map[string]int{"y": 2, "x": 1}), true},
		{a.Set("x", 3), false},
		{a.Delete("y"), false},
		{a.Set("z", 0), false},
	} {
		if got := Equal(a, tt.b, eq); got != tt.want {
			t.Errorf("Equal(%v, %v) = %v", maps.Collect(a.All()), maps.Collect(tt.b.All()), got)
		}
	}
}
