package debug_test

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/debug"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// TestNodesSyncAndServicesWithoutPassing: /debug/nodes names, under the
// JSON keys meshctl reads, a connected node's sync state overall and by
// type URL and when it was last seen, and the services that have no
// passing instance.
func TestNodesSyncAndServicesWithoutPassing(t *testing.T) {
	reg := prometheus.NewRegistry()
	srv := serve.New(serve.Options{Metrics: serve.NewMetrics(reg), Translate: translate.DefaultConfig()})
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(lis) }()
	t.Cleanup(func() {
		srv.Stop(2 * time.Second)
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	failing := instance("payment", "payment-1", "")
	failing.Status = catalog.StatusCritical
	srv.Apply(&catalog.Snapshot{Index: 7, Services: pmap.FromMap(map[string][]catalog.Instance{
		"order":   {instance("order", "order-1", "user,payment")},
		"user":    {instance("user", "user-1", "")},
		"payment": {failing},
	})}, time.Now())
	h := debug.NewHandler(srv, &fakeCatalog{}, fakeOperators{}, nil, reg, slog.New(slog.DiscardHandler))
	envoysim.StartT(t, lis.Addr().String(), envoysim.Options{ID: "order-1", Cluster: "order"})

	type node struct {
		ID         string            `json:"id"`
		Sync       string            `json:"sync"`
		SyncByType map[string]string `json:"sync_by_type"`
		LastSeen   *time.Time        `json:"last_seen"`
	}
	var body struct {
		Nodes   []node   `json:"nodes"`
		Without []string `json:"services_without_passing_instances"`
	}
	poll.Until(t, 5*time.Second, func() (bool, string) {
		code, b := get(t, h, "/debug/nodes")
		if code != http.StatusOK {
			return false, fmt.Sprintf("%d %s", code, b)
		}
		if err := json.Unmarshal([]byte(b), &body); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(body.Nodes, func(n node) bool { return n.ID == "order-1" })
		if i < 0 {
			return false, b
		}
		n := body.Nodes[i]
		return n.Sync == serve.SyncSynced && len(n.SyncByType) == 4 && n.LastSeen != nil, fmt.Sprintf("order-1: %+v", n)
	})
	for typ, st := range body.Nodes[slices.IndexFunc(body.Nodes, func(n node) bool { return n.ID == "order-1" })].SyncByType {
		if st != serve.SyncSynced {
			t.Errorf("%s: %s", typ, st)
		}
	}
	if !slices.Equal(body.Without, []string{"payment"}) {
		t.Errorf("services_without_passing_instances = %v, want [payment]", body.Without)
	}
	if _, b := get(t, h, "/metrics"); !containsAll(b, "meshop_controlplane_services_without_passing_instances 1",
		`meshop_controlplane_nodes{flavour="sidecar",sync="SYNCED"} 1`, `meshop_controlplane_service_passing_instances{service="payment"} 0`) {
		t.Errorf("metrics:\n%s", b)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
