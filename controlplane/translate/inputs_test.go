package translate_test

import (
	"reflect"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// keyShop builds meshes of order (calls user, public /orders) and user
// (two instances) with one builder, as the control plane does.
type keyShop struct {
	b          *model.Builder
	services   pmap.Map[[]catalog.Instance]
	policies   pmap.Map[[]byte]
	intentions pmap.Map[[]byte]
	ca         catalog.CA
}

func inst(svc, id, addr, ups, prefixes string) catalog.Instance {
	return catalog.Instance{ID: id, Service: svc, Node: "n1", Address: addr, Port: 15006, Status: catalog.StatusPassing,
		Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "mesh_upstreams": ups, "mesh_public_prefixes": prefixes}}
}

func newKeyShop() *keyShop {
	return &keyShop{b: model.NewBuilder(model.BuilderOptions{}), services: pmap.FromMap(map[string][]catalog.Instance{
		"order": {inst("order", "order-1", "10.0.0.1", "user", "/orders")},
		"user":  {inst("user", "user-1", "10.0.0.2", "", ""), inst("user", "user-2", "10.0.0.3", "", "")},
	})}
}

func (k *keyShop) build() *model.Mesh {
	return k.b.Build(&catalog.Snapshot{Services: k.services, Policies: k.policies, Intentions: k.intentions, CA: k.ca})
}

// keysOf returns the inputs key of each node and the ConfigKey of each
// service's Shared, under the default configuration or cfg.
func keysOf(t *testing.T, m *model.Mesh, cfg ...translate.Config) map[string]string {
	t.Helper()
	c := translate.DefaultConfig()
	if len(cfg) > 0 {
		c = cfg[0]
	}
	shared := translate.AllShared(m, c)
	out := map[string]string{}
	for id := range m.Instances.Keys() {
		in, _, err := translate.InputsOf(m, translate.Node{ID: id}, c, shared)
		if err != nil {
			t.Fatal(err)
		}
		out[id] = in.Key()
	}
	edge, _, _ := translate.InputsOf(m, translate.Node{Edge: true}, c, shared)
	out["edge"] = edge.Key()
	for name := range m.Services.Keys() {
		out["shared/"+name] = shared[name].ConfigKey
	}
	return out
}

func changedKeys(a, b map[string]string) []string {
	var out []string
	for k := range b {
		if a[k] != b[k] {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func TestInputKeysFollowWhatTranslationReads(t *testing.T) {
	k := newKeyShop()
	m1 := k.build()
	k1 := keysOf(t, m1)
	if k1["user-1"] != k1["user-2"] {
		t.Error("the two user instances have different inputs; they could not share a snapshot")
	}

	// Health is an endpoint matter: no node's own resources change.
	flipped := inst("user", "user-2", "10.0.0.3", "", "")
	flipped.Status = catalog.StatusCritical
	k.services = k.services.Set("user", []catalog.Instance{inst("user", "user-1", "10.0.0.2", "", ""), flipped})
	m2 := k.build()
	if got := changedKeys(k1, keysOf(t, m2)); len(got) != 0 {
		t.Errorf("a health flip changed inputs keys %v", got)
	}
	// Only the flipped instance is a changed read; user's Shared is
	// translated again, and its configuration key stays.
	ch := translate.Changed(m1, m2)
	if diff := cmp.Diff([]string{"instance/user-2"}, ch.Reads); diff != "" {
		t.Errorf("changed reads (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"user"}, ch.Services); diff != "" {
		t.Errorf("changed services (-want +got):\n%s", diff)
	}
	ch.SharedChanged(translate.AllShared(m1, translate.DefaultConfig())["user"], translate.AllShared(m2, translate.DefaultConfig())["user"])
	if len(ch.Reads) != 1 {
		t.Errorf("a health flip changed user's shared configuration: %v", ch.Reads)
	}

	// user's policy: its Shared, its callers (order, and the edge only if
	// user were public) and its own instances (inbound route timeout).
	k.policies = k.policies.Set("user", []byte(`{"timeout":"1s"}`))
	m3 := k.build()
	want := []string{"order-1", "shared/user", "user-1", "user-2"}
	if diff := cmp.Diff(want, changedKeys(k1, keysOf(t, m3))); diff != "" {
		t.Errorf("keys changed by user's policy (-want +got):\n%s", diff)
	}
	if got := translate.Changed(m2, m2); len(got.Reads)+len(got.Services)+len(got.Instances) != 0 {
		t.Errorf("a mesh compared with itself changed: %+v", got)
	}
}

func TestGatheringReportsItsReads(t *testing.T) {
	m := newKeyShop().build()
	cfg := translate.DefaultConfig()
	shared := translate.AllShared(m, translate.DefaultConfig())
	_, reads, err := translate.InputsOf(m, translate.Node{ID: "order-1"}, cfg, shared)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(translate.Reads{"instance/order-1", "upstream/order", "upstream/user"}, reads); diff != "" {
		t.Errorf("order-1 reads (-want +got):\n%s", diff)
	}
	// The edge reads auth's shared configuration even while auth is not
	// in the mesh: its arrival turns the token check on.
	_, reads, _ = translate.InputsOf(m, translate.Node{Edge: true}, cfg, shared)
	if diff := cmp.Diff(translate.Reads{"routes", "upstream/auth", "upstream/order"}, reads); diff != "" {
		t.Errorf("edge reads (-want +got):\n%s", diff)
	}
}

// TestIntentionsAndTrustDomainReach exactly their readers: with MTLS on,
// a change of a service's intentions changes the inputs of that
// service's nodes only, and a new trust domain those of every node and
// Shared; with MTLS off, neither is read.
func TestIntentionsAndTrustDomainReachExactlyTheirReaders(t *testing.T) {
	mtls := translate.DefaultConfig()
	mtls.MTLS = true
	k := newKeyShop()
	k.ca = catalog.CA{TrustDomain: "a1.consul", RootPEMs: []string{"root"}}
	m1 := k.build()
	k1, plain1 := keysOf(t, m1, mtls), keysOf(t, m1)

	_, reads, err := translate.InputsOf(m1, translate.Node{ID: "user-1"}, mtls, translate.AllShared(m1, mtls))
	if err != nil {
		t.Fatal(err)
	}
	want := translate.Reads{"instance/user-1", "intentions/*", "intentions/user", "trust_domain", "upstream/user"}
	if diff := cmp.Diff(want, reads); diff != "" {
		t.Errorf("user-1 reads with MTLS on (-want +got):\n%s", diff)
	}

	k.intentions = k.intentions.Set("user", []byte(`{"Sources":[{"Name":"order","Action":"allow"}]}`))
	m2 := k.build()
	if diff := cmp.Diff([]string{"intentions/user"}, translate.Changed(m1, m2).Reads); diff != "" {
		t.Errorf("reads changed by user's intentions (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"user-1", "user-2"}, changedKeys(k1, keysOf(t, m2, mtls))); diff != "" {
		t.Errorf("keys changed by user's intentions (-want +got):\n%s", diff)
	}
	if got := changedKeys(plain1, keysOf(t, m2)); len(got) != 0 {
		t.Errorf("with MTLS off, user's intentions changed keys %v", got)
	}

	k.ca = catalog.CA{TrustDomain: "b2.consul", RootPEMs: []string{"root"}}
	m3 := k.build()
	ch := translate.Changed(m2, m3)
	if !slices.Contains(ch.Reads, "trust_domain") || len(ch.Services) != 2 {
		t.Errorf("a new trust domain: reads %v, services %v; want trust_domain and every service", ch.Reads, ch.Services)
	}
	every := []string{"edge", "order-1", "shared/order", "shared/user", "user-1", "user-2"}
	if diff := cmp.Diff(every, changedKeys(k1, keysOf(t, m3, mtls))); diff != "" {
		t.Errorf("keys changed by a new trust domain (-want +got):\n%s", diff)
	}

	// New roots under the same trust domain: nothing translated reads them.
	k.ca.RootPEMs = []string{"root", "next root"}
	m4 := k.build()
	if got := changedKeys(keysOf(t, m3, mtls), keysOf(t, m4, mtls)); len(got) != 0 {
		t.Errorf("new roots changed keys %v", got)
	}
}

// TestConfigKeyCoversEveryPolicyField changes each field of a policy in
// turn, nested ones included: each change must change the key of the
// service's shared configuration, or its callers would keep a stale one.
func TestConfigKeyCoversEveryPolicyField(t *testing.T) {
	keyOf := func(p model.Policy) string {
		return translate.Upstream(&model.Service{Name: "user", Protocol: model.HTTP1, Policy: p}, "", nil).ConfigKey
	}
	base := keyOf(model.DefaultPolicy())
	leaves := leafCount(reflect.TypeFor[model.Policy]())
	if leaves < 20 {
		t.Fatalf("only %d policy fields found; the walk misses some", leaves)
	}
	for i := range leaves {
		p := model.DefaultPolicy()
		p.Retries.GRPCOn = slices.Clone(p.Retries.GRPCOn)
		path, _ := changeLeaf(t, reflect.ValueOf(&p).Elem(), "Policy", i)
		if keyOf(p) == base {
			t.Errorf("changing %s leaves the configuration key as it was", path)
		}
	}
}

// changeLeaf changes the i-th non-struct field of v (depth first) and
// returns its path; while i is beyond v, it returns what is left of i.
func changeLeaf(t *testing.T, v reflect.Value, path string, i int) (string, int) {
	if v.Kind() == reflect.Struct {
		for k := range v.NumField() {
			var p string
			if p, i = changeLeaf(t, v.Field(k), path+"."+v.Type().Field(k).Name, i); p != "" {
				return p, 0
			}
		}
		return "", i
	}
	if i > 0 {
		return "", i - 1
	}
	switch v.Kind() {
	case reflect.Slice:
		v.Set(reflect.Append(v, reflect.New(v.Type().Elem()).Elem()))
	case reflect.Int, reflect.Int64:
		v.SetInt(v.Int() + 1)
	case reflect.Uint32:
		v.SetUint(v.Uint() + 1)
	case reflect.String:
		v.SetString(v.String() + "x")
	default:
		t.Fatalf("%s: kind %s is not covered by this test; extend it", path, v.Kind())
	}
	return path, 0
}

// leafCount is the number of non-struct fields in t, nested ones counted.
func leafCount(t reflect.Type) int {
	if t.Kind() != reflect.Struct {
		return 1
	}
	n := 0
	for i := range t.NumField() {
		n += leafCount(t.Field(i).Type)
	}
	return n
}
