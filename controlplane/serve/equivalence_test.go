package serve_test

import (
	"bytes"
	"flag"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/catalogtest"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
)

var equivalenceSteps = flag.Int("equivalence.steps", 10_000, "random catalog and policy changes TestServedEqualsFromScratch applies")

// randomCatalog is a small catalog that random steps change: instances of
// five services come and go, flip health, and change their upstreams,
// public prefixes, versions, protocols, addresses and app ports; policies
// are set (valid ones: the reference builder has no last good policy) and
// deleted; so are intentions (of a service or of "*"); the CA's trust
// domain and roots change.
type randomCatalog struct {
	rng catalogtest.Rand
	// proxyless are the instances whose node is a gRPC client; fresh are
	// those added since the server last saw their node.
	proxyless, fresh map[string]bool
	insts            map[string]catalog.Instance
	policies         map[string][]byte
	intentions       map[string][]byte
	ca               catalog.CA
	next             int
	index            uint64
	// services and keys are the persistent maps of the last snapshot: a
	// service or policy that did not change keeps its value, as the
	// catalog watcher keeps it.
	services pmap.Map[[]catalog.Instance]
	keys     pmap.Map[[]byte]
	entries  pmap.Map[[]byte]
}

var randomIntentions = []string{
	`{"Sources":[{"Name":"order","Action":"allow"}]}`,
	`{"Sources":[{"Name":"*","Action":"allow"},{"Name":"auth","Action":"deny"}]}`,
	`{"Sources":[{"Name":"user","Permissions":[{"Action":"deny","HTTP":{"PathExact":"/x"}},{"Action":"allow","HTTP":{"PathPrefix":"/"}}]}]}`,
	`{"Sources":[{"Name":"user","Permissions":[{"Action":"allow","HTTP":{"PathRegex":"("}}]}]}`,
}

var randomServices = []string{"auth", "user", "product", "order", "payment"}

// maxInstances bounds the catalog, so that every step costs about the same.
const maxInstances = 10

func (c *randomCatalog) ids() []string {
	return slices.Sorted(func(yield func(string) bool) {
		for id := range c.insts {
			if !yield(id) {
				return
			}
		}
	})
}

func (c *randomCatalog) add() {
	svc := c.rng.Pick(randomServices)
	c.next++
	id := fmt.Sprintf("%s-%d", svc, c.next)
	c.insts[id] = catalog.Instance{
		ID: id, Service: svc, Node: "n1", Address: fmt.Sprintf("10.0.%d.%d", c.next/250, c.next%250+1), Port: 15006,
		Status: catalog.StatusPassing, CreateIndex: uint64(c.next),
		Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "version": c.rng.Pick([]string{"v1", "v2"}),
			"mesh_grpc_port":       c.rng.Pick([]string{"9090", "9091"}),
			"mesh_upstreams":       c.rng.Subset(randomServices),
			"mesh_public_prefixes": c.rng.Subset([]string{"/" + svc, "/" + svc + "s", "/shared"})},
	}
	if c.next%3 == 0 {
		c.proxyless[id] = true
	}
	c.fresh[id] = true
}

// step applies one random change.
func (c *randomCatalog) step() string {
	ids := c.ids()
	if len(ids) < 3 || len(ids) < maxInstances && c.rng.IntN(8) == 0 {
		c.add()
		return "add"
	}
	id := c.rng.Pick(ids)
	in := c.insts[id]
	in.Meta = cloneMeta(in.Meta)
	var what string
	switch c.rng.IntN(13) {
	case 0:
		if len(ids) >= maxInstances || c.rng.IntN(2) == 0 {
			delete(c.insts, id)
			return "remove " + id
		}
		c.add()
		return "add"
	case 1, 2:
		in.Status = c.rng.Pick([]string{catalog.StatusPassing, catalog.StatusCritical, catalog.StatusWarning})
		what = "health"
	case 3:
		in.Meta["mesh_upstreams"] = c.rng.Subset(randomServices)
		what = "upstreams"
	case 4:
		in.Meta["mesh_public_prefixes"] = c.rng.Subset([]string{"/" + in.Service, "/" + in.Service + "s", "/shared"})
		what = "prefixes"
	case 5:
		in.Meta["version"] = c.rng.Pick([]string{"v1", "v2", "v3"})
		what = "version"
	case 6:
		in.Meta["mesh_protocol"] = c.rng.Pick([]string{"http", "http2"})
		what = "protocol"
	case 7:
		in.Address = fmt.Sprintf("10.1.%d.%d", c.rng.IntN(4), c.rng.IntN(250)+1)
		in.Meta["mesh_grpc_port"] = c.rng.Pick([]string{"9090", "9091", "x"})
		what = "address"
	case 9:
		dest := c.rng.Pick(append([]string{"*"}, randomServices...))
		if c.rng.IntN(3) == 0 {
			delete(c.intentions, dest)
			return "delete intentions " + dest
		}
		c.intentions[dest] = []byte(c.rng.Pick(randomIntentions))
		return "intentions " + dest
	case 10:
		if c.rng.IntN(4) == 0 {
			c.ca.TrustDomain = c.rng.Pick([]string{"", "a1.consul", "b2.consul"})
			return "trust domain " + c.ca.TrustDomain
		}
		c.ca.RootPEMs = []string{c.rng.Pick([]string{"root 1", "root 2"})}
		return "roots"
	case 8:
		// A bad app port is a model problem and a node that does not
		// build; the served snapshot stays the last good one.
		in.Meta["mesh_app_port"] = c.rng.Pick([]string{"8080", "8081", "x"})
		what = "app port"
	default:
		svc := c.rng.Pick(randomServices)
		if c.rng.IntN(3) == 0 {
			delete(c.policies, svc)
			return "delete policy " + svc
		}
		c.policies[svc] = c.policy()
		return "policy " + svc
	}
	c.insts[id] = in
	return what + " " + id
}

func (c *randomCatalog) policy() []byte {
	p := fmt.Sprintf(`{"timeout":"%ds","retries":{"attempts":%d},"circuit_breaker":{"max_requests":%d}`,
		c.rng.IntN(5)+1, c.rng.IntN(3), 100*(c.rng.IntN(3)+1))
	if c.rng.IntN(3) == 0 {
		w := uint32(c.rng.IntN(99) + 1)
		p += fmt.Sprintf(`,"traffic_split":[{"version":"v1","weight":%d},{"version":"v2","weight":%d}]`, w, 100-w)
	}
	return []byte(p + "}")
}

func (c *randomCatalog) snapshot() *catalog.Snapshot {
	c.index++
	services := map[string][]catalog.Instance{}
	for _, id := range c.ids() {
		in := c.insts[id]
		services[in.Service] = append(services[in.Service], in)
	}
	c.services = catalogtest.SetChanged(c.services, services, func(a, b []catalog.Instance) bool { return reflect.DeepEqual(a, b) })
	c.keys = catalogtest.SetChanged(c.keys, c.policies, bytes.Equal)
	c.entries = catalogtest.SetChanged(c.entries, c.intentions, bytes.Equal)
	return &catalog.Snapshot{Index: c.index, SeenAt: time.Now(), Services: c.services, Policies: c.keys, Intentions: c.entries, CA: c.ca}
}

// TestServedEqualsFromScratch applies long random sequences of catalog
// and policy changes to a server, and checks after each that every
// snapshot it serves equals a translation from nothing of the same
// catalog: a new model builder and every translate function called
// afresh (translate.FromScratch), with none of serve's
// incremental state (its readers index, its Shared, its groups). Half
// the steps run with mutual TLS on, half with it off.
func TestServedEqualsFromScratch(t *testing.T) {
	for _, mtls := range []bool{false, true} {
		t.Run(fmt.Sprintf("mtls=%v", mtls), func(t *testing.T) { testServedEqualsFromScratch(t, mtls) })
	}
}

func testServedEqualsFromScratch(t *testing.T, mtls bool) {
	steps := *equivalenceSteps / 2
	if testing.Short() {
		steps = min(steps, 500)
	}
	cfg := translate.DefaultConfig()
	cfg.MTLS = mtls
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d, %d steps", seed, steps)
	c := &randomCatalog{rng: catalogtest.NewRand(seed), insts: map[string]catalog.Instance{}, policies: map[string][]byte{},
		intentions: map[string][]byte{}, ca: catalog.CA{TrustDomain: "a1.consul"},
		proxyless: map[string]bool{}, fresh: map[string]bool{}}
	srv := serve.New(serve.Options{Translate: cfg})
	var history []string
	for step := range steps {
		history = append(history, c.step())
		snap := c.snapshot()
		srv.Apply(snap, time.Time{})
		for id := range c.fresh {
			// A new instance's node connects: a proxyless one says so.
			n := &corev3.Node{Id: id, Cluster: c.insts[id].Service}
			if c.proxyless[id] {
				n.Metadata, _ = structpb.NewStruct(map[string]any{translate.MetaFlavor: translate.FlavorProxyless})
			}
			srv.SeenForTest(n)
			delete(c.fresh, id)
		}
		ref := model.NewBuilder(model.BuilderOptions{}).Build(snap)
		if err := compareServed(srv, ref, cfg, c.proxyless); err != nil {
			t.Fatalf("step %d (seed %d): %v\nlast changes: %s", step, seed, err, strings.Join(history[max(0, len(history)-8):], "; "))
		}
	}
}

// compareServed checks every key of the server against the reference.
func compareServed(srv *serve.Server, ref *model.Mesh, cfg translate.Config, proxyless map[string]bool) error {
	status := map[string]serve.NodeStatus{}
	for _, n := range srv.Nodes() {
		status[n.Key] = n
	}
	want := map[string]bool{"edge": true}
	for id := range ref.Instances.Keys() {
		want[id] = true
	}
	for key, n := range status {
		if !want[key] && n.Snapshot != nil {
			return fmt.Errorf("%s is no instance any more but has a snapshot", key)
		}
	}
	// As translate.FromScratch does, with the Shared of every service made
	// once per step rather than per node.
	shared := translate.AllShared(ref, cfg)
	for key := range want {
		n := translate.Node{ID: key, Edge: key == "edge"}
		if proxyless[key] {
			n.Flavor = translate.FlavorProxyless
		}
		in, _, err := translate.InputsOf(ref, n, cfg, shared)
		if err != nil {
			if st := status[key].Snapshot; st == nil || st.Error == "" {
				return fmt.Errorf("%s: the reference fails (%v) but the server reports no error", key, err)
			}
			continue
		}
		got, err := srv.ServedForTest(key, n.Flavor)
		if err != nil {
			return fmt.Errorf("%s: %v", key, err)
		}
		for typ, rs := range in.Build().Resources(shared).ByType() {
			if err := sameResources(rs, got[typ]); err != nil {
				return fmt.Errorf("%s %s: %v", key, typ, err)
			}
		}
	}
	return nil
}

// sameResources compares the reference's resources with the served ones
// (by name) on the bytes Envoy receives: translation packs Any fields
// deterministically, and a compact resource encodes to the bytes of the
// tree it was made from.
func sameResources(want []cachetypes.Resource, got map[string]cachetypes.Resource) error {
	if len(want) != len(got) {
		return fmt.Errorf("%d resources served, want %d", len(got), len(want))
	}
	for _, w := range want {
		name := cachev3.GetResourceName(w)
		g, ok := got[name]
		if !ok {
			return fmt.Errorf("%s is not served", name)
		}
		wb, err := cachev3.MarshalResource(w)
		if err != nil {
			return err
		}
		gb, err := cachev3.MarshalResource(g)
		if err != nil {
			return err
		}
		if !bytes.Equal(wb, gb) {
			return fmt.Errorf("%s differs:\n got %x\nwant %v", name, gb, w)
		}
	}
	return nil
}
