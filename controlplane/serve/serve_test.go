package serve_test

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/catalogtest"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
	"github.com/meshop/meshop/localenv"
)

const wait = 5 * time.Second

// shop is a small catalog: order calls user, product and payment; user
// calls nobody; the edge serves /orders and /products.
type shop struct {
	mu    sync.Mutex
	insts map[string]catalog.Instance
	index uint64
	last  pmap.Map[[]catalog.Instance] // the services of the last snapshot
}

func newShop() *shop {
	s := &shop{insts: map[string]catalog.Instance{}, index: 10}
	s.add("order", "order-1", "user,product,payment", "/orders")
	s.add("user", "user-1", "", "")
	s.add("user", "user-2", "", "")
	s.add("product", "product-1", "", "/products")
	s.add("payment", "payment-1", "", "")
	return s
}

func (s *shop) add(svc, id, upstreams, prefixes string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index++
	s.insts[id] = catalog.Instance{
		ID: id, Service: svc, Node: "n1", Address: fmt.Sprintf("10.0.0.%d", len(s.insts)+1), Port: 15006,
		Status: catalog.StatusPassing, CreateIndex: s.index,
		Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "version": "v1",
			"mesh_upstreams": upstreams, "mesh_public_prefixes": prefixes},
	}
}

func (s *shop) set(id string, f func(*catalog.Instance)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.insts[id]
	in.Meta = cloneMeta(in.Meta)
	f(&in)
	s.insts[id] = in
}

func cloneMeta(m map[string]string) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

// snapshot makes a snapshot the way the catalog watcher does: from the
// last one, with the services whose instances changed set.
func (s *shop) snapshot() *catalog.Snapshot {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.index++
	services := map[string][]catalog.Instance{}
	ids := make([]string, 0, len(s.insts))
	for id := range s.insts {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		in := s.insts[id]
		services[in.Service] = append(services[in.Service], in)
	}
	s.last = catalogtest.SetChanged(s.last, services, func(a, b []catalog.Instance) bool { return reflect.DeepEqual(a, b) })
	return &catalog.Snapshot{Index: s.index, SeenAt: time.Now(), Services: s.last}
}

type harness struct {
	srv     *serve.Server
	addr    string
	reg     *prometheus.Registry
	metrics *serve.Metrics
	logs    *localenv.LogBuffer
}

func start(t *testing.T, cfg translate.Config, more ...func(*serve.Options)) *harness {
	t.Helper()
	h := &harness{reg: prometheus.NewRegistry(), logs: &localenv.LogBuffer{}}
	h.metrics = serve.NewMetrics(h.reg)
	opts := serve.Options{
		Logger:    slog.New(slog.NewJSONHandler(h.logs, nil)),
		Metrics:   h.metrics,
		Translate: cfg,
	}
	for _, f := range more {
		f(&opts)
	}
	h.srv = serve.New(opts)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = lis.Addr().String()
	done := make(chan error, 1)
	go func() { done <- h.srv.Serve(lis) }()
	t.Cleanup(func() {
		h.srv.Stop(2 * time.Second)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("server logs:\n%s", h.logs.String())
		}
	})
	return h
}

func (h *harness) node(id string) serve.NodeStatus {
	for _, n := range h.srv.Nodes() {
		if n.ID == id {
			return n
		}
	}
	return serve.NodeStatus{}
}

var orderClusters = []string{"local_app", "otel_collector", "svc_payment", "svc_product", "svc_user"}

func modes() []bool { return []bool{false, true} }

func modeName(delta bool) string {
	if delta {
		return "delta"
	}
	return "sotw"
}

func TestInitialFetchAndACK(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			h.srv.Apply(newShop().snapshot(), time.Now())
			e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta})
			e.Must(t, wait, "full config", func(s envoysim.State) bool {
				return slices.Equal(envoysim.Names(s.Clusters), orderClusters) &&
					slices.Equal(envoysim.Names(s.Endpoints), []string{"svc_payment", "svc_product", "svc_user"}) &&
					slices.Equal(envoysim.Names(s.Listeners), []string{"expose", "inbound", "outbound"}) &&
					slices.Equal(envoysim.Names(s.Routes), []string{"expose", "inbound", "outbound"})
			})
			if got := e.State().Hosts("svc_user"); !slices.Equal(got, []string{"user-1", "user-2"}) {
				t.Errorf("svc_user hosts = %v", got)
			}
			// Every type acknowledged at the version the server holds.
			_, _, versions, err := h.srv.Resources("order-1")
			if err != nil {
				t.Fatal(err)
			}
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("order-1")
				acked := map[string]string{}
				for typ, a := range n.LastAck {
					acked[typ] = a.Version
				}
				return cmp.Equal(acked, versions) && n.Connected && n.Type == "sidecar",
					fmt.Sprintf("acks %v, want %v; node %+v", acked, versions, n)
			})
			if got := testutil.ToFloat64(h.metrics.Connected.WithLabelValues("sidecar")); got != 1 {
				t.Errorf("connected sidecars = %v, want 1", got)
			}
		})
	}
}

func TestNackIsReportedAndServingContinues(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			sh := newShop()
			h.srv.Apply(sh.snapshot(), time.Now())
			reject := func(typeURL string, res map[string]proto.Message) string {
				if typeURL == resource.ListenerType {
					return "error adding listener 'inbound': cannot bind '0.0.0.0:15006': Address already in use"
				}
				return ""
			}
			e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta, Reject: reject})
			e.Must(t, wait, "clusters and endpoints", func(s envoysim.State) bool {
				return len(s.Clusters) == 5 && len(s.Endpoints) == 3
			})
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("order-1")
				return n.LastNack != nil, fmt.Sprintf("no NACK recorded: %+v", n)
			})
			n := h.node("order-1")
			if n.LastNack.TypeURL != resource.ListenerType || !strings.Contains(n.LastNack.Message, "Address already in use") || n.LastNack.Version == "" {
				t.Errorf("last NACK = %+v", n.LastNack)
			}
			if got := testutil.ToFloat64(h.metrics.Nacks.WithLabelValues(resource.ListenerType, "sidecar")); got < 1 {
				t.Errorf("NACK metric = %v", got)
			}
			if !strings.Contains(h.logs.String(), "envoy rejected configuration (NACK)") {
				t.Error("NACK not logged")
			}
			// The server keeps serving the node: an endpoint change arrives.
			sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
			h.srv.Apply(sh.snapshot(), time.Now())
			e.Must(t, wait, "user-2 gone after the NACK", func(s envoysim.State) bool {
				return slices.Equal(s.Hosts("svc_user"), []string{"user-1"})
			})
		})
	}
}

func TestReconnectWithLastVersion(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			sh := newShop()
			h.srv.Apply(sh.snapshot(), time.Now())
			e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta})
			e.Must(t, wait, "full config", func(s envoysim.State) bool { return len(s.Routes) == 3 && len(s.Endpoints) == 3 })
			before := e.State().Versions

			// While the Envoy is away, user-2 fails.
			if err := e.Reconnect(); err != nil {
				t.Fatal(err)
			}
			sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
			h.srv.Apply(sh.snapshot(), time.Now())
			e.Must(t, wait, "new endpoints after reconnect", func(s envoysim.State) bool {
				return slices.Equal(s.Hosts("svc_user"), []string{"user-1"})
			})
			after := e.State()
			if after.Versions[resource.EndpointType] == before[resource.EndpointType] {
				t.Error("EDS version did not change")
			}
			for _, typ := range []string{resource.ClusterType, resource.ListenerType, resource.RouteType} {
				if after.Versions[typ] != before[typ] {
					t.Errorf("%s version changed from %q to %q though its content did not", typ, before[typ], after.Versions[typ])
				}
			}
			if !slices.Equal(envoysim.Names(after.Clusters), orderClusters) || len(after.Routes) != 3 {
				t.Errorf("state after reconnect: clusters %v routes %v", envoysim.Names(after.Clusters), envoysim.Names(after.Routes))
			}
		})
	}
}

func TestSidecarsGetOnlyTheirConfig(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			sh := newShop()
			h.srv.Apply(sh.snapshot(), time.Now())
			order := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta})
			user := envoysim.StartT(t, h.addr, envoysim.Options{ID: "user-1", Cluster: "user", Delta: delta})
			order.Must(t, wait, "order config", func(s envoysim.State) bool { return len(s.Endpoints) == 3 && len(s.Routes) == 3 })
			user.Must(t, wait, "user config", func(s envoysim.State) bool {
				return slices.Equal(envoysim.Names(s.Clusters), []string{"local_app", "otel_collector"}) && len(s.Routes) == 3
			})
			if n := len(user.State().Endpoints); n != 0 {
				t.Errorf("user sidecar has %d load assignments, want 0", n)
			}
			vhosts := func(s envoysim.State) []string {
				var out []string
				for _, vh := range s.Routes["outbound"].GetVirtualHosts() {
					out = append(out, vh.GetName())
				}
				return out
			}
			if got := vhosts(order.State()); !slices.Equal(got, []string{"payment", "product", "user", "undeclared"}) {
				t.Errorf("order outbound vhosts = %v", got)
			}
			if got := vhosts(user.State()); !slices.Equal(got, []string{"undeclared"}) {
				t.Errorf("user outbound vhosts = %v", got)
			}

			// order stops calling product: its Envoy unsubscribes, and
			// product's endpoint changes never reach it again.
			sh.set("order-1", func(i *catalog.Instance) { i.Meta["mesh_upstreams"] = "user,payment" })
			h.srv.Apply(sh.snapshot(), time.Now())
			order.Must(t, wait, "product gone", func(s envoysim.State) bool {
				_, c := s.Clusters["svc_product"]
				_, e := s.Endpoints["svc_product"]
				return !c && !e
			})
			cut := time.Now()
			sh.add("product", "product-2", "", "")
			sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
			h.srv.Apply(sh.snapshot(), time.Now())
			order.Must(t, wait, "user-2 gone", func(s envoysim.State) bool { return slices.Equal(s.Hosts("svc_user"), []string{"user-1"}) })
			for _, r := range order.History() {
				if r.At.After(cut) && slices.Contains(r.Names, "svc_product") {
					t.Errorf("order received svc_product after unsubscribing: %+v", r)
				}
			}
			for _, r := range user.History() {
				for _, n := range r.Names {
					if strings.HasPrefix(n, "svc_") {
						t.Errorf("user sidecar received %s, a service it does not call", n)
					}
				}
			}
		})
	}
}

func TestRebuildOnlyWhatChanged(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	sh := newShop()
	sh.add("payment", "payment-2", "user", "")
	h.srv.Apply(sh.snapshot(), time.Now())
	builds := func() map[string]int {
		out := map[string]int{}
		for _, n := range h.srv.Nodes() {
			if n.Snapshot != nil {
				out[n.Key] = n.Snapshot.Builds
			}
		}
		return out
	}
	// Only the edge is built until a node asks (here an operator's read).
	if b0 := builds(); len(b0) != 1 || b0["edge"] != 1 {
		t.Fatalf("builds after the first pass = %v, want the edge's alone", b0)
	}
	for _, id := range []string{"order-1", "user-1", "user-2", "payment-1", "payment-2", "product-1"} {
		if _, _, _, err := h.srv.Resources(id); err != nil {
			t.Fatalf("Resources(%s): %v", id, err)
		}
	}
	b1 := builds()
	for _, k := range []string{"order-1", "user-1", "payment-2", "edge"} {
		if b1[k] != 1 {
			t.Fatalf("builds after the nodes were read = %v", b1)
		}
	}
	// A product endpoint change concerns order (calls product) and the
	// edge (routes /products), not user or payment-2 (calls user).
	sh.set("product-1", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	h.srv.Apply(sh.snapshot(), time.Now())
	b2 := builds()
	want := map[string]int{"order-1": 2, "edge": 2, "user-1": 1, "user-2": 1, "payment-1": 1, "payment-2": 1, "product-1": 1}
	if diff := cmp.Diff(want, b2); diff != "" {
		t.Errorf("builds (-want +got):\n%s", diff)
	}
	// Same catalog again: nothing is rebuilt.
	h.srv.Apply(sh.snapshot(), time.Now())
	if diff := cmp.Diff(b2, builds()); diff != "" {
		t.Errorf("an unchanged catalog rebuilt (-before +after):\n%s", diff)
	}
	if got := testutil.CollectAndCount(h.metrics.PushLatency); got != 1 {
		t.Errorf("latency histogram series = %d", got)
	}
}

func TestFailingSnapshotIsNeverSet(t *testing.T) {
	cfg := translate.DefaultConfig()
	cfg.RateLimit.Interval = 0 // the edge listener fails validation
	h := start(t, cfg)
	h.srv.Apply(newShop().snapshot(), time.Now())
	edge := envoysim.StartT(t, h.addr, envoysim.Options{ID: "edge-1", Cluster: "edge"})
	order := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order"})
	order.Must(t, wait, "order config (unaffected)", func(s envoysim.State) bool { return len(s.Routes) == 3 })
	poll.Until(t, wait, func() (bool, string) {
		return h.node("edge-1").Connected, "edge-1 not connected"
	})
	n := h.node("edge-1")
	if n.Snapshot == nil || !strings.Contains(n.Snapshot.Error, "validate") || !strings.Contains(n.Snapshot.Error, "FillInterval") {
		t.Errorf("edge snapshot status = %+v", n.Snapshot)
	}
	if _, _, _, err := h.srv.Resources("edge-1"); err == nil {
		t.Error("edge has a snapshot")
	}
	if got := len(edge.History()); got != 0 {
		t.Errorf("edge received %d responses, want none", got)
	}
	if got := testutil.ToFloat64(h.metrics.ValidationFailures.WithLabelValues("snapshot", "validate")); got != 1 {
		t.Errorf("snapshot validation failures = %v, want 1", got)
	}
}

func TestUnknownAndBadNodes(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	sh := newShop()
	h.srv.Apply(sh.snapshot(), time.Now())

	// No node id: the stream is refused with a reason.
	noID := envoysim.StartT(t, h.addr, envoysim.Options{Cluster: "order"})
	poll.Until(t, wait, func() (bool, string) { return noID.Err() != nil, "stream without node id still open" })
	if st, _ := status.FromError(noID.Err()); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "node.id is empty") {
		t.Errorf("no-id stream ended with %v", noID.Err())
	}

	// Unknown id: no config, a note, then config once it registers.
	ghost := envoysim.StartT(t, h.addr, envoysim.Options{ID: "review-1", Cluster: "review"})
	poll.Until(t, wait, func() (bool, string) {
		return h.node("review-1").Type == "unknown", fmt.Sprintf("unknown node not tracked: %+v", h.node("review-1"))
	})
	if n := h.node("review-1"); len(n.Notes) == 0 || !strings.Contains(n.Notes[0], "no instance") {
		t.Errorf("unknown node notes = %v", n.Notes)
	}
	sh.add("review", "review-1", "product", "")
	h.srv.Apply(sh.snapshot(), time.Now())
	ghost.Must(t, wait, "config after registration", func(s envoysim.State) bool {
		return slices.Equal(envoysim.Names(s.Endpoints), []string{"svc_product"})
	})
	if n := h.node("review-1"); n.Type != "sidecar" {
		t.Errorf("review-1 type = %q after registration", n.Type)
	}
}

// TestProxylessNodeOfAnotherServiceIsRefused: a proxyless node whose
// bootstrap names a service that is not its instance's gets its stream
// refused with the reason, a log line and a /debug/nodes entry, and no
// configuration.
func TestProxylessNodeOfAnotherServiceIsRefused(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	h.srv.Apply(newShop().snapshot(), time.Now())
	e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "payment",
		Metadata: map[string]any{translate.MetaFlavor: translate.FlavorProxyless}})
	poll.Until(t, wait, func() (bool, string) { return e.Err() != nil, "refused node's stream still open" })
	if st, _ := status.FromError(e.Err()); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), `node.cluster "payment" is not the service "order"`) {
		t.Errorf("stream ended with %v", e.Err())
	}
	if s := e.State(); len(s.Listeners)+len(s.Clusters) != 0 {
		t.Errorf("refused node got config: %d listeners, %d clusters", len(s.Listeners), len(s.Clusters))
	}
	n := h.node("order-1")
	if n.Connected || len(n.Notes) != 1 || !strings.Contains(n.Notes[0], "names its own service") {
		t.Errorf("/debug/nodes entry = %+v", n)
	}
	if !strings.Contains(h.logs.String(), "node refused") {
		t.Error("refusal not logged")
	}

	// The same for an Envoy: a node of another service never gets this
	// instance's snapshot (its secrets included).
	envoy := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "payment"})
	poll.Until(t, wait, func() (bool, string) { return envoy.Err() != nil, "refused Envoy's stream still open" })
	if st, _ := status.FromError(envoy.Err()); st.Code() != codes.PermissionDenied {
		t.Errorf("Envoy's stream ended with %v", envoy.Err())
	}
	if s := envoy.State(); len(s.Listeners)+len(s.Clusters) != 0 {
		t.Errorf("refused Envoy got config: %d listeners, %d clusters", len(s.Listeners), len(s.Clusters))
	}
}

func TestNodeMetadataPorts(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	h.srv.Apply(newShop().snapshot(), time.Now())
	port := func(l *listenerv3.Listener) uint32 { return l.GetAddress().GetSocketAddress().GetPortValue() }

	// The inbound port as registered in Consul (15006 here), the outbound
	// one moved.
	e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order",
		Metadata: map[string]any{"inbound_port": 15006, "outbound_port": "16001", "expose_port": 16021}})
	e.Must(t, wait, "listeners", func(s envoysim.State) bool { return len(s.Listeners) == 3 })
	s := e.State()
	if port(s.Listeners["inbound"]) != 15006 || port(s.Listeners["outbound"]) != 16001 || port(s.Listeners["expose"]) != 16021 {
		t.Errorf("ports inbound %d outbound %d expose %d", port(s.Listeners["inbound"]), port(s.Listeners["outbound"]), port(s.Listeners["expose"]))
	}
	for _, r := range e.History() {
		if r.TypeURL == resource.ListenerType && r.Version != s.Versions[resource.ListenerType] {
			t.Errorf("the Envoy first got listeners on default ports (version %s)", r.Version)
		}
	}

	// Metadata may not move the inbound listener off the registered port:
	// the node gets no configuration, and /debug/nodes says why.
	envoysim.StartT(t, h.addr, envoysim.Options{ID: "payment-1", Cluster: "payment", Metadata: map[string]any{"inbound_port": 16006}})
	poll.Until(t, wait, func() (bool, string) {
		n := h.node("payment-1")
		return n.Snapshot != nil && strings.Contains(n.Snapshot.Error, "inbound_port"), fmt.Sprintf("%+v", n.Snapshot)
	})

	bad := envoysim.StartT(t, h.addr, envoysim.Options{ID: "user-1", Cluster: "user", Metadata: map[string]any{"inbound_port": "http"}})
	bad.Must(t, wait, "listeners", func(s envoysim.State) bool { return len(s.Listeners) == 3 })
	if got := port(bad.State().Listeners["inbound"]); got != 15006 {
		t.Errorf("inbound port with bad metadata = %d, want default 15006", got)
	}
	n := h.node("user-1")
	if !slices.ContainsFunc(n.Notes, func(s string) bool { return strings.Contains(s, `inbound_port="http"`) }) {
		t.Errorf("notes = %v", n.Notes)
	}
	if !strings.Contains(h.logs.String(), "envoy node metadata rejected") {
		t.Error("bad metadata not logged")
	}
}

func TestEdgesShareOneSnapshot(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			h.srv.Apply(newShop().snapshot(), time.Now())
			e1 := envoysim.StartT(t, h.addr, envoysim.Options{ID: "edge-1", Cluster: "edge", Delta: delta})
			e2 := envoysim.StartT(t, h.addr, envoysim.Options{ID: "edge-2", Cluster: "edge", Delta: delta})
			for _, e := range []*envoysim.Envoy{e1, e2} {
				e.Must(t, wait, "edge config", func(s envoysim.State) bool {
					return slices.Equal(envoysim.Names(s.Clusters), []string{"otel_collector", "svc_order", "svc_product"}) &&
						slices.Equal(envoysim.Names(s.Endpoints), []string{"svc_order", "svc_product"}) &&
						slices.Equal(envoysim.Names(s.Routes), []string{"edge"})
				})
			}
			if diff := cmp.Diff(e1.State().Versions, e2.State().Versions); diff != "" {
				t.Errorf("edges got different versions:\n%s", diff)
			}
			if k1, k2 := h.node("edge-1").Key, h.node("edge-2").Key; k1 != "edge" || k2 != "edge" {
				t.Errorf("edge keys %q %q", k1, k2)
			}
			if got := testutil.ToFloat64(h.metrics.Connected.WithLabelValues("edge")); got != 2 {
				t.Errorf("connected edges = %v", got)
			}
		})
	}
}

// fakeSource feeds Run like the catalog watcher does.
type fakeSource struct {
	mu      sync.Mutex
	changed chan struct{}
	latest  *catalog.Snapshot
	seen    time.Time
}

func (f *fakeSource) Changed() <-chan struct{} { return f.changed }

func (f *fakeSource) Take() (*catalog.Snapshot, time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.seen
	f.seen = time.Time{}
	return f.latest, s
}

func (f *fakeSource) publish(s *catalog.Snapshot) {
	f.mu.Lock()
	f.latest = s
	if f.seen.IsZero() {
		f.seen = time.Now()
	}
	f.mu.Unlock()
	select {
	case f.changed <- struct{}{}:
	default:
	}
}

// TestDebounce: a burst of changes becomes one push after the quiet time;
// a change stream that never goes quiet is still pushed every MaxDelay.
func TestDebounce(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := serve.NewMetrics(reg)
	srv := serve.New(serve.Options{Metrics: m, Translate: translate.DefaultConfig(), Quiet: 50 * time.Millisecond, MaxDelay: 250 * time.Millisecond})
	src := &fakeSource{changed: make(chan struct{}, 1)}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, src) }()
	defer func() {
		cancel()
		<-done
	}()
	builds := func() int {
		for _, n := range srv.Nodes() {
			if n.Key == "order-1" && n.Snapshot != nil {
				return n.Snapshot.Builds
			}
		}
		return 0
	}

	sh := newShop()
	src.publish(sh.snapshot())
	poll.Until(t, 2*time.Second, func() (bool, string) { return srv.Mesh() != nil, "no mesh yet" })
	if _, _, _, err := srv.Resources("order-1"); err != nil { // order-1's snapshot is kept from now on
		t.Fatal(err)
	}
	// Burst: ten changes well inside the quiet time of each other.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for i := range 10 {
		sh.set("user-1", func(in *catalog.Instance) { in.Port = 20000 + i })
		src.publish(sh.snapshot())
		<-tick.C
	}
	poll.Until(t, 2*time.Second, func() (bool, string) { return builds() == 2, fmt.Sprintf("builds %d", builds()) })
	if got := srv.Mesh().Instance("user-1").Port; got != 20009 {
		t.Errorf("pushed port %d, want the last one 20009", got)
	}

	// A change every 10ms for 1s never goes quiet; MaxDelay forces pushes.
	start := time.Now()
	for i := 0; time.Since(start) < time.Second; i++ {
		sh.set("user-1", func(in *catalog.Instance) { in.Port = 21000 + i })
		src.publish(sh.snapshot())
		<-tick.C
		<-tick.C
	}
	got := builds() - 2
	if got < 2 || got > 6 {
		t.Errorf("%d pushes during 1s of constant change with MaxDelay 250ms, want about 4", got)
	}
	if n := testutil.CollectAndCount(m.PushLatency); n != 1 {
		t.Errorf("latency histogram not collected")
	}
}

// TestNackIsNotAnsweredWithTheSameVersion: go-control-plane's cache
// answers a NACK, which names the last ACKed version, with the version
// just rejected; an Envoy that keeps rejecting it would loop. The node
// gets each version once, keeps its last good one, and gets the next
// different one as usual.
func TestNackIsNotAnsweredWithTheSameVersion(t *testing.T) {
	for _, delta := range modes() {
		t.Run(modeName(delta), func(t *testing.T) {
			h := start(t, translate.DefaultConfig())
			sh := newShop()
			h.srv.Apply(sh.snapshot(), time.Now())
			rejectClusters := func(typeURL string, _ map[string]proto.Message) string {
				if typeURL == resource.ClusterType {
					return "clusters refused by the test"
				}
				return ""
			}
			e := envoysim.StartT(t, h.addr, envoysim.Options{ID: "order-1", Cluster: "order", Delta: delta, Reject: rejectClusters})
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("order-1")
				return n.Nacks > 0, fmt.Sprintf("no NACK recorded: %+v", n)
			})

			// A policy change makes a new cluster version, sent once and
			// refused once too.
			snap := sh.snapshot()
			snap.Policies = pmap.FromMap(map[string][]byte{"user": []byte(`{"connect_timeout":"2s"}`)})
			h.srv.Apply(snap, time.Now())
			poll.Until(t, wait, func() (bool, string) {
				n := h.node("order-1")
				return n.Nacks >= 2, fmt.Sprintf("the new cluster version was not sent and refused: %+v", n)
			})
			// The routes of an unrelated later change arrive behind any
			// resent cluster response, so the history is complete here.
			snap = sh.snapshot()
			snap.Policies = pmap.FromMap(map[string][]byte{"user": []byte(`{"connect_timeout":"2s","timeout":"3s"}`)})
			h.srv.Apply(snap, time.Now())
			e.Must(t, wait, "the route timeout change", func(s envoysim.State) bool {
				return s.Versions[resource.RouteType] != "" && strings.Contains(fmt.Sprint(s.Routes["outbound"]), "seconds:3")
			})
			sent := map[string]int{}
			for _, r := range e.History() {
				if r.TypeURL == resource.ClusterType {
					sent[r.Version]++
				}
			}
			if len(sent) < 2 {
				t.Fatalf("cluster versions sent = %v, want at least two", sent)
			}
			for v, n := range sent {
				if n != 1 {
					t.Errorf("cluster version %s was sent %d times; want once", v, n)
				}
			}
			if got := h.node("order-1").Nacks; got != len(sent) {
				t.Errorf("NACKs = %d for %d distinct versions", got, len(sent))
			}
		})
	}
}
