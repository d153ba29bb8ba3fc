package serve

import (
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// testMesh is order (calling user and product, public /orders), user with
// two instances, product (public /products).
func testMesh(t *testing.T) *model.Mesh {
	t.Helper()
	inst := func(svc, id, addr, ups, prefixes string) catalog.Instance {
		return catalog.Instance{ID: id, Service: svc, Node: "n1", Address: addr, Port: 15006, Status: catalog.StatusPassing,
			Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "version": "v1",
				"mesh_upstreams": ups, "mesh_public_prefixes": prefixes}}
	}
	snap := &catalog.Snapshot{Index: 1, SeenAt: time.Now(), Services: pmap.FromMap(map[string][]catalog.Instance{
		"order":   {inst("order", "order-1", "10.0.0.1", "user,product", "/orders")},
		"user":    {inst("user", "user-1", "10.0.0.2", "", ""), inst("user", "user-2", "10.0.0.3", "", "")},
		"product": {inst("product", "product-1", "10.0.0.4", "", "/products")},
	})}
	m := model.NewBuilder(model.BuilderOptions{}).Build(snap)
	if err := m.Validate(); err != nil {
		t.Fatalf("test mesh: %v", err)
	}
	return m
}

// allResources is every resource of order's sidecar and of the edge.
func allResources(t *testing.T, m *model.Mesh) []cachetypes.Resource {
	t.Helper()
	var out []cachetypes.Resource
	side, err := translate.FromScratch(m, translate.Node{ID: "order-1"}, translate.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	edge, err := translate.FromScratch(m, translate.Node{Edge: true}, translate.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []*translate.Resources{side, edge} {
		for _, rs := range r.ByType() {
			out = append(out, rs...)
		}
	}
	return out
}

func TestCompactKeepsTheWireContent(t *testing.T) {
	for _, r := range allResources(t, testMesh(t)) {
		name := cachev3.GetResourceName(r)
		t.Run(shortType(resourceType(r))+"/"+name, func(t *testing.T) {
			wire, err := cachev3.MarshalResource(r)
			if err != nil {
				t.Fatal(err)
			}
			c, err := compact(r, wire)
			if err != nil {
				t.Fatal(err)
			}
			if got := cachev3.GetResourceName(c); got != name {
				t.Errorf("compact name = %q, want %q", got, name)
			}
			cw, err := cachev3.MarshalResource(c)
			if err != nil {
				t.Fatal(err)
			}
			if len(cw) != len(wire) {
				t.Errorf("compact encodes to %d bytes, the full tree to %d", len(cw), len(wire))
			}
			full, err := expand(c)
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(full, r) {
				t.Errorf("expand(compact(r)) differs from r:\n got %v\nwant %v", full, r)
			}
			// Only the name is left as a Go field: the rest is bytes.
			switch v := c.(type) {
			case *clusterv3.Cluster:
				if v.ClusterDiscoveryType != nil || v.ConnectTimeout != nil {
					t.Errorf("compact cluster kept its fields: %v", v)
				}
			case *endpointv3.ClusterLoadAssignment:
				if len(v.Endpoints) != 0 {
					t.Errorf("compact load assignment kept its endpoints: %v", v)
				}
			case *routev3.RouteConfiguration:
				if len(v.VirtualHosts) != 0 {
					t.Errorf("compact route configuration kept its virtual hosts: %v", v)
				}
			}
		})
	}
}

func TestConsistentUsesRecordedReferences(t *testing.T) {
	m := testMesh(t)
	side, err := translate.FromScratch(m, translate.Node{ID: "order-1"}, translate.DefaultConfig())
	if err != nil {
		t.Fatal(err)
	}
	// entries are the sidecar's, without the load assignment named drop,
	// with extra.
	entries := func(drop string, extra ...cachetypes.Resource) map[resource.Type][]*entry {
		out := map[resource.Type][]*entry{}
		for typ, rs := range side.ByType() {
			for _, r := range append(rs, extra...) {
				if (typ == resource.EndpointType && cachev3.GetResourceName(r) == drop) || resourceType(r) != typ {
					continue
				}
				out[typ] = append(out[typ], newEntry(r))
			}
		}
		return out
	}
	if err := consistent(entries("")); err != nil {
		t.Fatalf("order's sidecar: %v", err)
	}
	if err := consistent(entries("svc_user")); err == nil || !strings.Contains(err.Error(), "mismatched") {
		t.Errorf("missing load assignment: err = %v, want a mismatch", err)
	}
	stray := &routev3.RouteConfiguration{Name: "stray"}
	if err := consistent(entries("", stray)); err == nil {
		t.Error("unreferenced route configuration passed")
	}
}

func resourceType(r cachetypes.Resource) resource.Type {
	switch r.(type) {
	case *clusterv3.Cluster:
		return resource.ClusterType
	case *endpointv3.ClusterLoadAssignment:
		return resource.EndpointType
	case *routev3.RouteConfiguration:
		return resource.RouteType
	default:
		return resource.ListenerType
	}
}

func TestIdenticalNodeResourcesShareOneEntry(t *testing.T) {
	m := testMesh(t)
	pool := newEntryPool()
	cfg := translate.DefaultConfig()
	shared := translate.AllShared(m, translate.DefaultConfig())
	own := func(id string) *translate.NodeConfig {
		in, _, err := translate.InputsOf(m, translate.Node{ID: id}, cfg, shared)
		if err != nil {
			t.Fatal(err)
		}
		return in.Build()
	}
	user1, product := own("user-1"), own("product-1")
	byName := func(nc *translate.NodeConfig) map[string]*entry {
		out := map[string]*entry{}
		for typ, es := range ownEntries(pool, nc) {
			for _, e := range es {
				out[shortType(typ)+"/"+e.name] = e
			}
		}
		return out
	}
	a, b := byName(user1), byName(product)
	// Every sidecar has the same otel_collector cluster; user and product
	// serve on the same app port with the default policy.
	for _, name := range []string{"Cluster/otel_collector", "Cluster/local_app", "RouteConfiguration/inbound"} {
		if a[name] == nil || a[name] != b[name] {
			t.Errorf("%s: user and product do not share one entry", name)
		}
	}
	// Their listeners name the service (tracing, access logs).
	if a["Listener/inbound"] == b["Listener/inbound"] {
		t.Error("user's and product's inbound listeners share an entry, but they differ")
	}
}
