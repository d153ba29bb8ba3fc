package model

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/catalogtest"
)

// TestIncrementalEqualsFromNothing applies random changes to a catalog,
// one snapshot after the other, and builds each snapshot twice: with a
// Builder that builds on its previous mesh, and with one that is made to
// build from nothing every time (keeping only the history a Builder must
// keep: last good policies, problems already reported). Both must make the
// same mesh, with the same instances and callers, and both must report
// exactly the problems whose keys were not in the previous mesh.
func TestIncrementalEqualsFromNothing(t *testing.T) {
	rng := catalogtest.Rand{Rand: rand.New(rand.NewPCG(7, 11))}
	var incReported, refReported []string
	inc := NewBuilder(BuilderOptions{OnProblem: func(p Problem) { incReported = append(incReported, p.Key()) }})
	ref := NewBuilder(BuilderOptions{OnProblem: func(p Problem) { refReported = append(refReported, p.Key()) }})
	c := &randomCatalog{rng: rng, snap: snap(inst("svc-0", "svc-0-0"))}
	const steps = 2000
	incremental := 0
	seen := map[string]bool{} // the previous mesh's problem keys
	for step := range steps {
		what := c.change()
		if _, ok := inc.build(inc.last, c.snap, false); ok { // changes only lastGood, as Build will
			incremental++
		}
		got, want := inc.Build(c.snap), buildFromNothing(ref, c.snap)
		if diff := cmp.Diff(view(t, want), view(t, got)); diff != "" {
			t.Fatalf("step %d (%s): incremental build differs from one from nothing (-want +got):\n%s", step, what, diff)
		}
		var appeared []string
		now := map[string]bool{}
		for _, p := range got.Problems {
			if !seen[p.Key()] && !now[p.Key()] {
				appeared = append(appeared, p.Key())
			}
			now[p.Key()] = true
		}
		slices.Sort(appeared)
		for _, reported := range [][]string{incReported, refReported} {
			slices.Sort(reported)
			if diff := cmp.Diff(appeared, reported); diff != "" {
				t.Fatalf("step %d (%s): problems reported (-appeared +reported):\n%s", step, what, diff)
			}
		}
		incReported, refReported, seen = nil, nil, now
	}
	if incremental < steps/3 {
		t.Errorf("only %d of %d builds built on the previous mesh; the test hardly tests that", incremental, steps)
	}
	t.Logf("%d of %d builds built on the previous mesh", incremental, steps)
}

// buildFromNothing is Build always taking the way from nothing.
func buildFromNothing(b *Builder, snap *catalog.Snapshot) *Mesh {
	next, _ := b.build(b.last, snap, true)
	b.report(b.last.problems, next.problems)
	b.last = next
	return next.mesh
}

// view is everything a mesh tells, as JSON-friendly values.
func view(t *testing.T, m *Mesh) map[string]any {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	insts := map[string]Instance{}
	for id, in := range m.Instances.All() {
		insts[id] = *in
		if svc := m.Service(in.Service); svc == nil || !slices.Contains(svc.Instances, in) {
			t.Fatalf("instance %s is not one of its service's", id)
		}
	}
	callers := map[string][]string{}
	for name, svc := range m.Services.All() {
		for _, u := range svc.Upstreams {
			callers[u] = append(callers[u], name)
		}
	}
	for name := range m.Services.Keys() {
		want := callers[name]
		slices.Sort(want)
		if diff := cmp.Diff(want, m.Callers(name)); diff != "" {
			t.Fatalf("Callers(%s) (-want +got):\n%s", name, diff)
		}
	}
	return map[string]any{"json": string(b), "instances": insts, "roots": m.RootPEMs}
}

// randomCatalog makes random changes to a snapshot, the way the catalog
// watcher does: a changed service gets a new slice, the others keep
// theirs.
type randomCatalog struct {
	rng  catalogtest.Rand
	snap *catalog.Snapshot
	next int // instance number
}

var (
	randomNames    = []string{"svc-0", "svc-1", "svc-2", "svc-3", "svc-4", "Bad_Name", "consul", "ghost"}
	randomPrefixes = []string{"/a", "/b", "/a/x", "bad"}
	randomPolicies = []string{`{"timeout":"2s"}`, `{"timeout":"3s"}`, `{"timeout":"forever"}`,
		`{"traffic_split":[{"version":"v1","weight":50},{"version":"v2","weight":50}]}`}
	randomIntentions = []string{`{"Sources":[{"Name":"svc-1","Action":"allow"}]}`,
		`{"Sources":[{"Name":"*","Action":"allow"},{"Name":"svc-2","Action":"deny"}]}`,
		`{"Sources":[{"Name":"svc-0","Permissions":[{"Action":"allow","HTTP":{"PathPrefix":"/a"}}]}]}`,
		`{"Sources":[{"Name":"svc-0","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"("}}]}]}`,
		`not json`}
	randomTrustDomains = []string{"", "11111111-2222-3333-4444-555555555555.consul", "Bad Domain"}
)

// change makes one random change and says which.
func (c *randomCatalog) change() string {
	s := *c.snap
	s.Index++
	c.snap = &s
	name := c.rng.Pick(randomNames)
	insts, _ := s.Services.Get(name)
	insts = slices.Clone(insts)
	edit := func(what string, f func(in *catalog.Instance)) string {
		if len(insts) == 0 {
			return "nothing"
		}
		i := c.rng.IntN(len(insts))
		insts[i].Meta = maps.Clone(insts[i].Meta)
		if insts[i].Meta == nil { // consul's: it joins the mesh
			insts[i].Meta = map[string]string{}
		}
		f(&insts[i])
		s.Services = s.Services.Set(name, insts)
		return what + " " + insts[i].ID
	}
	switch c.rng.IntN(14) {
	case 0, 1:
		return edit("flip", func(in *catalog.Instance) {
			in.Status = map[string]string{catalog.StatusPassing: catalog.StatusCritical}[in.Status]
			if in.Status == "" {
				in.Status = catalog.StatusPassing
			}
		})
	case 2:
		return edit("prefixes", func(in *catalog.Instance) { in.Meta[MetaPublicPrefixes] = c.rng.Subset(randomPrefixes) })
	case 3:
		return edit("create index", func(in *catalog.Instance) { in.CreateIndex = uint64(c.rng.IntN(5)) })
	case 4:
		return edit("upstreams", func(in *catalog.Instance) { in.Meta[MetaUpstreams] = c.rng.Subset(randomNames) })
	case 5:
		return edit("version", func(in *catalog.Instance) { in.Meta[MetaVersion] = c.rng.Pick([]string{"v1", "v2", "v 3"}) })
	case 6:
		return edit("protocol", func(in *catalog.Instance) { in.Meta[MetaProtocol] = c.rng.Pick([]string{"http", "grpc"}) })
	case 7:
		in := inst(name, fmt.Sprintf("%s-%d", name, c.next))
		c.next++
		if name == "consul" {
			in.Meta = nil
		}
		if c.rng.IntN(8) == 0 { // an ID another service has
			in.ID = fmt.Sprintf("%s-%d", c.rng.Pick(randomNames), c.rng.IntN(c.next))
		}
		s.Services = s.Services.Set(name, append(insts, in))
		return "add " + in.ID
	case 8:
		if len(insts) <= 1 {
			s.Services = s.Services.Delete(name)
			return "remove " + name
		}
		i := c.rng.IntN(len(insts))
		s.Services = s.Services.Set(name, slices.Delete(insts, i, i+1))
		return "remove an instance of " + name
	case 9:
		key := c.rng.Pick(append([]string{"a/b", ""}, randomNames...))
		s.Policies = s.Policies.Set(key, []byte(c.rng.Pick(randomPolicies)))
		return "policy " + key
	case 10:
		s.Policies = s.Policies.Delete(name)
		return "delete policy " + name
	case 11:
		dest := c.rng.Pick(append([]string{"*"}, randomNames...))
		if c.rng.IntN(3) == 0 {
			s.Intentions = s.Intentions.Delete(dest)
			return "delete intentions " + dest
		}
		s.Intentions = s.Intentions.Set(dest, []byte(c.rng.Pick(randomIntentions)))
		return "intentions " + dest
	case 12:
		s.CA = catalog.CA{TrustDomain: c.rng.Pick(randomTrustDomains), RootPEMs: []string{c.rng.Pick([]string{"a", "b"})}}
		return "ca " + s.CA.TrustDomain
	default:
		return "nothing"
	}
}
