package model

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// inst is a well-formed meshed instance; options tweak it.
func inst(svc, id string, opts ...func(*catalog.Instance)) catalog.Instance {
	in := catalog.Instance{
		ID: id, Service: svc, Node: "n1", Address: "10.0.0.1", Port: 15006,
		Status: catalog.StatusPassing, CreateIndex: 10,
		Meta: map[string]string{MetaProtocol: "http", MetaAppPort: "8080", MetaVersion: "v1"},
	}
	for _, o := range opts {
		o(&in)
	}
	return in
}

func meta(k, v string) func(*catalog.Instance) {
	return func(i *catalog.Instance) { i.Meta[k] = v }
}

func snap(insts ...catalog.Instance) *catalog.Snapshot {
	services := map[string][]catalog.Instance{}
	for _, in := range insts {
		services[in.Service] = append(services[in.Service], in)
	}
	return &catalog.Snapshot{Index: 42, Services: pmap.FromMap(services)}
}

func problemKinds(ps Problems) []string {
	var out []string
	for _, p := range ps {
		out = append(out, string(p.Severity)+" "+p.Kind+" "+p.Service+"/"+p.Instance+" "+p.Field)
	}
	return out
}

func TestBuildShop(t *testing.T) {
	s := snap(
		inst("order", "order-1", meta(MetaUpstreams, "user, product,payment,"), meta(MetaPublicPrefixes, "/orders")),
		inst("user", "user-1", meta(MetaPublicPrefixes, "/users")),
		inst("user", "user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical }),
		inst("product", "product-1", meta(MetaPublicPrefixes, "/products,/products/admin")),
		inst("payment", "payment-1", meta(MetaProtocol, "grpc")),
		catalog.Instance{ID: "consul", Service: "consul", Address: "127.0.0.1", Port: 8300, Status: catalog.StatusPassing},
	)
	m := NewBuilder(BuilderOptions{}).Build(s)
	if err := m.Validate(); err != nil {
		t.Fatalf("Validate() = %v, want nil", err)
	}
	if diff := cmp.Diff([]string{"order", "payment", "product", "user"}, m.ServiceNames()); diff != "" {
		t.Errorf("services (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"consul"}, m.Unmeshed); diff != "" {
		t.Errorf("unmeshed (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"payment", "product", "user"}, m.Instance("order-1").Upstreams); diff != "" {
		t.Errorf("order upstreams (-want +got):\n%s", diff)
	}
	wantRoutes := []PublicRoute{{"/products/admin", "product"}, {"/products", "product"}, {"/orders", "order"}, {"/users", "user"}}
	if diff := cmp.Diff(wantRoutes, m.Routes); diff != "" {
		t.Errorf("routes (-want +got):\n%s", diff)
	}
	if got := len(m.Service("user").Endpoints()); got != 1 {
		t.Errorf("user endpoints = %d, want 1 (user-2 is critical)", got)
	}
	if m.Instance("user-2") == nil {
		t.Error("critical instance user-2 missing from Instances; its sidecar would lose its config")
	}
	if got := m.Service("payment").Protocol; got != HTTP2 {
		t.Errorf("payment protocol = %q, want %q", got, HTTP2)
	}
	if got := m.Service("order").Policy; !cmp.Equal(got, DefaultPolicy()) {
		t.Errorf("order policy = %+v, want default", got)
	}
}

func TestBuildBadInput(t *testing.T) {
	tests := []struct {
		name  string
		snap  *catalog.Snapshot
		want  []string // problem summaries, sorted by key
		check func(t *testing.T, m *Mesh)
	}{
		{
			name: "unknown and malformed upstreams",
			snap: snap(inst("order", "order-1", meta(MetaUpstreams, "user,prodcut,Bad_Name")), inst("user", "user-1")),
			want: []string{"error upstream order/order-1 mesh_upstreams", "error upstream order/order-1 mesh_upstreams"},
			check: func(t *testing.T, m *Mesh) {
				if diff := cmp.Diff([]string{"user"}, m.Instance("order-1").Upstreams); diff != "" {
					t.Errorf("upstreams (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "bad prefixes",
			snap: snap(inst("order", "order-1", meta(MetaPublicPrefixes, "orders,/,/orders/,/a//b,/a/../b,/a b,/ok"))),
			want: []string{"error prefix order/order-1 mesh_public_prefixes", "error prefix order/order-1 mesh_public_prefixes", "error prefix order/order-1 mesh_public_prefixes",
				"error prefix order/order-1 mesh_public_prefixes", "error prefix order/order-1 mesh_public_prefixes", "error prefix order/order-1 mesh_public_prefixes"},
			check: func(t *testing.T, m *Mesh) {
				if diff := cmp.Diff([]PublicRoute{{"/ok", "order"}}, m.Routes); diff != "" {
					t.Errorf("routes (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "duplicate prefix stays with the first registration",
			snap: snap(
				inst("order", "order-1", meta(MetaPublicPrefixes, "/orders"), func(i *catalog.Instance) { i.CreateIndex = 5 }),
				inst("billing", "billing-1", meta(MetaPublicPrefixes, "/orders,/bills"), func(i *catalog.Instance) { i.CreateIndex = 9 }),
			),
			want: []string{"error prefix billing/ mesh_public_prefixes"},
			check: func(t *testing.T, m *Mesh) {
				want := []PublicRoute{{"/orders", "order"}, {"/bills", "billing"}}
				if diff := cmp.Diff(want, m.Routes); diff != "" {
					t.Errorf("routes (-want +got):\n%s", diff)
				}
			},
		},
		{
			name: "non-numeric and missing ports",
			snap: snap(
				inst("order", "order-1", meta(MetaAppPort, "eighty")),
				inst("order", "order-2", func(i *catalog.Instance) { delete(i.Meta, MetaAppPort) }),
				inst("order", "order-3", meta(MetaAppPort, "70000"), func(i *catalog.Instance) { i.Port = 0 }),
			),
			want: []string{"error port order/order-1 mesh_app_port", "error port order/order-2 mesh_app_port", "error port order/order-3 Port", "error port order/order-3 mesh_app_port"},
			check: func(t *testing.T, m *Mesh) {
				if got := m.Instance("order-1").AppPort; got != 0 {
					t.Errorf("order-1 app port = %d, want 0", got)
				}
				if got := len(m.Service("order").Endpoints()); got != 2 {
					t.Errorf("endpoints = %d, want 2 (order-3 has port 0)", got)
				}
			},
		},
		{
			name: "protocol conflict and unknown protocol",
			snap: snap(inst("pay", "pay-1", meta(MetaProtocol, "http2")), inst("pay", "pay-2", meta(MetaProtocol, "carrier-pigeon"))),
			want: []string{"error meta pay/pay-2 mesh_protocol", "error meta pay/ mesh_protocol"},
			check: func(t *testing.T, m *Mesh) {
				if got := m.Service("pay").Protocol; got != HTTP1 {
					t.Errorf("protocol = %q, want %q", got, HTTP1)
				}
			},
		},
		{
			name: "bad service name and partly meshed service",
			snap: snap(inst("Order_Svc", "o-1"), inst("user", "user-1"), catalog.Instance{ID: "user-legacy", Service: "user", Address: "10.0.0.9", Port: 80, Status: "passing"}),
			want: []string{"error meta Order_Svc/ Name", "warning meta user/user-legacy Meta"},
		},
		{
			name: "split names a version without instances",
			snap: func() *catalog.Snapshot {
				s := snap(inst("user", "user-1"))
				s.Policies = s.Policies.Set("user", []byte(`{"traffic_split":[{"version":"v1","weight":90},{"version":"v2","weight":10}]}`))
				return s
			}(),
			want: []string{"warning policy user/ traffic_split[1]"},
		},
		{
			name: "bad policy key and policy for an absent service",
			snap: func() *catalog.Snapshot {
				s := snap(inst("user", "user-1"))
				s.Policies = s.Policies.Set("a/b", []byte(`{}`))
				s.Policies = s.Policies.Set("ghost", []byte(`{}`))
				s.Policies = s.Policies.Set("", nil)
				return s
			}(),
			want: []string{"error policy / mesh/policy/a/b", "warning policy ghost/ mesh/policy/ghost"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewBuilder(BuilderOptions{}).Build(tt.snap)
			err := m.Validate()
			if err == nil {
				t.Fatal("Validate() = nil, want problems")
			}
			if diff := cmp.Diff(tt.want, problemKinds(m.Problems)); diff != "" {
				t.Errorf("problems (-want +got):\n%s\nall:\n%v", diff, err)
			}
			if tt.check != nil {
				tt.check(t, m)
			}
		})
	}
}

func TestBuildPolicyLastGood(t *testing.T) {
	var logs bytes.Buffer
	var counted []string
	b := NewBuilder(BuilderOptions{
		Logger:    slog.New(slog.NewJSONHandler(&logs, nil)),
		OnProblem: func(p Problem) { counted = append(counted, p.Kind) },
	})
	s := snap(inst("user", "user-1"), inst("order", "order-1"))

	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"2s"}`))
	m1 := b.Build(s)
	if got := m1.Service("user").Policy.Timeout; got != 2*time.Second {
		t.Fatalf("timeout = %s, want 2s", got)
	}

	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"forever"}`))
	for range 3 { // rebuilding must not log or count the same problem again
		m2 := b.Build(s)
		if got := m2.Service("user").Policy.Timeout; got != 2*time.Second {
			t.Fatalf("after bad policy timeout = %s, want last good 2s", got)
		}
		if st := m2.Policies["user"]; st.Source != PolicyLastGood || !strings.Contains(st.Rejected, "duration") {
			t.Fatalf("policy status = %+v, want last_good with reason", st)
		}
		if m2.Service("order") != m1.Service("order") {
			t.Fatal("order was replaced although only user's policy was touched")
		}
	}
	if diff := cmp.Diff([]string{KindPolicy}, counted); diff != "" {
		t.Errorf("problems counted (-want +got):\n%s", diff)
	}
	if n := strings.Count(logs.String(), `"kind":"policy"`); n != 1 {
		t.Errorf("policy problem logged %d times, want once:\n%s", n, logs.String())
	}

	s.Policies = s.Policies.Delete("user")
	m3 := b.Build(s)
	if got := m3.Service("user").Policy; !cmp.Equal(got, DefaultPolicy()) {
		t.Errorf("after delete policy = %+v, want default", got)
	}
	if !strings.Contains(logs.String(), "problem resolved") {
		t.Errorf("resolution not logged:\n%s", logs.String())
	}

	// With no history a bad policy falls back to the default.
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"forever"}`))
	m4 := NewBuilder(BuilderOptions{}).Build(s)
	if st := m4.Policies["user"]; st.Source != PolicyDefault || st.Rejected == "" {
		t.Errorf("policy status = %+v, want default with reason", st)
	}
}

func TestVersionFromTag(t *testing.T) {
	s := snap(inst("user", "user-1", func(i *catalog.Instance) { delete(i.Meta, MetaVersion); i.Tags = []string{"primary", "v3"} }))
	m := NewBuilder(BuilderOptions{}).Build(s)
	if got := m.Instance("user-1").Version; got != "v3" {
		t.Errorf("version = %q, want v3 from the tag", got)
	}
}

// TestBuildReusesUnchangedServices: a service whose catalog slice is the
// same as in the previous build is not parsed again, and the mesh equals
// what a fresh builder makes of the same snapshot.
func TestBuildReusesUnchangedServices(t *testing.T) {
	base := snap(
		inst("order", "order-1", meta(MetaUpstreams, "user,product,nope"), meta(MetaPublicPrefixes, "/orders")),
		inst("user", "user-1", meta(MetaPublicPrefixes, "/users")),
		inst("user", "user-2"),
		inst("product", "product-1", meta(MetaPublicPrefixes, "/products")),
		catalog.Instance{ID: "consul", Service: "consul", Address: "127.0.0.1", Port: 8300, Status: catalog.StatusPassing},
	)
	base.Policies = base.Policies.Set("user", []byte(`{"timeout":"2s"}`))
	next := func(s *catalog.Snapshot, change func(*catalog.Snapshot)) *catalog.Snapshot {
		out := *s // the maps are persistent: changing out leaves s alone
		out.Index++
		change(&out)
		return &out
	}
	asJSON := func(m *Mesh) string {
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	b := NewBuilder(BuilderOptions{})
	m1 := b.Build(base)

	tests := []struct {
		name   string
		change func(*catalog.Snapshot)
		reused []string // services whose first instance is the previous build's
		kept   []string // services whose Service is the previous build's
		// replaced are instances that must be new (they changed).
		replaced []string
	}{
		{"health flip", func(s *catalog.Snapshot) {
			users, _ := s.Services.Get("user")
			users = slices.Clone(users)
			users[1].Status = catalog.StatusCritical
			s.Services = s.Services.Set("user", users)
		}, []string{"order", "product", "user"}, []string{"order", "product"}, []string{"user-2"}},
		{"policy change", func(s *catalog.Snapshot) { s.Policies = s.Policies.Set("product", []byte(`{"timeout":"3s"}`)) },
			[]string{"order", "product", "user"}, []string{"order", "user"}, nil},
		{"new service: everything rebuilt", func(s *catalog.Snapshot) {
			s.Services = s.Services.Set("nope", []catalog.Instance{inst("nope", "nope-1")})
		}, nil, nil, nil},
	}
	prev, prevSnap := m1, base
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := next(prevSnap, tt.change)
			got := b.Build(s)
			want := NewBuilder(BuilderOptions{}).Build(s)
			if diff := cmp.Diff(asJSON(want), asJSON(got)); diff != "" {
				t.Errorf("incremental build differs from a fresh one (-want +got):\n%s", diff)
			}
			for name, svc := range got.Services.All() {
				same := prev.Service(name) != nil && svc.Instances[0] == prev.Service(name).Instances[0]
				if same != slices.Contains(tt.reused, name) {
					t.Errorf("%s reused = %v, want %v", name, same, !same)
				}
				if kept := svc == prev.Service(name); kept != slices.Contains(tt.kept, name) {
					t.Errorf("%s Service kept = %v, want %v", name, kept, !kept)
				}
			}
			for _, id := range tt.replaced {
				if got.Instance(id) == nil || got.Instance(id) == prev.Instance(id) {
					t.Errorf("instance %s changed but was not replaced", id)
				}
			}
			prev, prevSnap = got, s
		})
	}
}

// TestLastGoodOutlivesTheBuilder: OnLastGood hears of each change to the
// last good policies (not of values accepted again or rejected), and
// SeedLastGood restores them in a new builder, where a rejected value
// keeps the restored policy and a restored key gone from KV is forgotten.
func TestLastGoodOutlivesTheBuilder(t *testing.T) {
	var heard []string
	record := func(key string, raw []byte) {
		if raw == nil {
			heard = append(heard, key+" deleted")
		} else {
			heard = append(heard, key+"="+string(raw))
		}
	}
	take := func() []string { h := heard; heard = nil; return h }
	s := snap(inst("user", "user-1"), inst("order", "order-1"))

	b := NewBuilder(BuilderOptions{OnLastGood: record})
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"2s"}`))
	b.Build(s)
	b.Build(s) // accepted again: nothing to tell
	if diff := cmp.Diff([]string{`user={"timeout":"2s"}`}, take()); diff != "" {
		t.Errorf("after a good value (-want +got):\n%s", diff)
	}
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"forever"}`))
	b.Build(s)
	if h := take(); len(h) != 0 {
		t.Errorf("a rejected value was reported: %v", h)
	}
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"3s"}`))
	b.Build(s)
	s.Policies = s.Policies.Delete("user")
	b.Build(s)
	b.Build(s)
	if diff := cmp.Diff([]string{`user={"timeout":"3s"}`, "user deleted"}, take()); diff != "" {
		t.Errorf("after a good value and a delete (-want +got):\n%s", diff)
	}

	// A restart: the stored values seed a new builder.
	b = NewBuilder(BuilderOptions{OnLastGood: record})
	ignored := b.SeedLastGood(map[string][]byte{
		"user":    []byte(`{"timeout":"2s"}`),
		"order":   []byte(`{"timeout":"2s"}`), // gone from KV while down
		"product": []byte(`{"timeout":"soon"}`),
		"No Such": []byte(`{}`),
	})
	if got := slices.Sorted(maps.Keys(ignored)); !slices.Equal(got, []string{"No Such", "product"}) {
		t.Errorf("ignored = %v, want No Such and product", ignored)
	}
	if err := ignored["product"]; err == nil || !strings.Contains(err.Error(), "duration") {
		t.Errorf("product ignored for %v, want the parse error", err)
	}
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"forever"}`)).Set("product", []byte(`{"timeout":"forever"}`))
	m := b.Build(s)
	if st := m.Policies["user"]; st.Source != PolicyLastGood || !strings.Contains(st.Rejected, "duration") {
		t.Errorf("user after a restart with a bad value = %+v, want last_good with the reason", st)
	}
	if got := m.Service("user").Policy.Timeout; got != 2*time.Second {
		t.Errorf("user timeout = %s, want the restored 2s", got)
	}
	if st := m.Policies["product"]; st.Source != PolicyDefault {
		t.Errorf("product (its stored value no longer parses) = %+v, want default", st)
	}
	if !slices.ContainsFunc(m.Problems, func(p Problem) bool {
		return p.Service == "user" && strings.Contains(p.Message, "the last good policy stays in force")
	}) {
		t.Errorf("no problem says user keeps its last good policy: %v", problemKinds(m.Problems))
	}
	if diff := cmp.Diff([]string{"order deleted"}, take()); diff != "" {
		t.Errorf("first build after the restart (-want +got):\n%s", diff)
	}
	s.Policies = s.Policies.Set("order", []byte(`{"timeout":"forever"}`))
	if st := b.Build(s).Policies["order"]; st.Source != PolicyDefault {
		t.Errorf("order (deleted while down, then a bad value) = %+v, want default", st)
	}
	// The stored value accepted again is not written again; a new one is.
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"2s"}`))
	b.Build(s)
	s.Policies = s.Policies.Set("user", []byte(`{"timeout":"4s"}`))
	b.Build(s)
	if diff := cmp.Diff([]string{`user={"timeout":"4s"}`}, take()); diff != "" {
		t.Errorf("after the restart (-want +got):\n%s", diff)
	}
}
