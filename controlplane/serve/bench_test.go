package serve_test

import (
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
)

// bigShop is n instances spread over 10 services; each instance of
// service i calls services i+1, i+2 and i+3 (mod 10).
func bigShop(n int) *shop {
	s := &shop{insts: map[string]catalog.Instance{}, index: 10}
	for i := range n {
		svc := i % 10
		ups := fmt.Sprintf("svc%d,svc%d,svc%d", (svc+1)%10, (svc+2)%10, (svc+3)%10)
		s.add(fmt.Sprintf("svc%d", svc), fmt.Sprintf("svc%d-%d", svc, i), ups, fmt.Sprintf("/r%d", svc))
		s.set(fmt.Sprintf("svc%d-%d", svc, i), func(in *catalog.Instance) { in.Address = fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255) })
	}
	return s
}

// BenchmarkEndpointFlip measures one pass after one instance's health
// flipped in a mesh of 1,000 sidecars: about 300 of them (those calling
// its service) and the edge get a new snapshot. Run with
// go test -run '^$' -bench EndpointFlip ./serve.
func BenchmarkEndpointFlip(b *testing.B) {
	sh := bigShop(1000)
	srv := serve.New(serve.Options{Translate: translate.DefaultConfig()})
	srv.Apply(sh.snapshot(), time.Now())
	b.ResetTimer()
	for i := range b.N {
		st := catalog.StatusCritical
		if i%2 == 1 {
			st = catalog.StatusPassing
		}
		sh.set("svc0-0", func(in *catalog.Instance) { in.Status = st })
		srv.Apply(sh.snapshot(), time.Now())
	}
}

// ringCatalog is a catalog of services svc-0..svc-(n-1) with k instances
// each, svc-i calling the next three services (the load tool's catalog
// scenario).
func ringCatalog(services, k int) *catalog.Snapshot {
	insts := map[string][]catalog.Instance{}
	at := 0
	for i := range services {
		name := fmt.Sprintf("svc-%d", i)
		ups := fmt.Sprintf("svc-%d,svc-%d,svc-%d", (i+1)%services, (i+2)%services, (i+3)%services)
		for j := range k {
			insts[name] = append(insts[name], catalog.Instance{
				ID: fmt.Sprintf("%s-%d", name, j), Service: name, Node: "n1",
				Address: fmt.Sprintf("10.%d.%d.%d", at>>16&255, at>>8&255, at&255), Port: 8080,
				Status: catalog.StatusPassing, CreateIndex: uint64(at + 1),
				Meta: map[string]string{"mesh_protocol": "http", "mesh_app_port": "8080", "version": "v1", "mesh_upstreams": ups},
			})
			at++
		}
	}
	return &catalog.Snapshot{Index: 1, SeenAt: time.Now(), Services: pmap.FromMap(insts)}
}

// BenchmarkSingleChange is the cost of one change (an instance of svc-3
// flips health; its 30 callers, whose nodes have asked for their
// configuration, get new endpoints) in a catalog of 1,000 and of 10,000
// services with 10 instances each. Like the catalog watcher, each new
// snapshot is the previous one with the changed service set, sharing
// every other service (and its instance slice). What a change costs should
// not grow with the mesh.
func BenchmarkSingleChange(b *testing.B) {
	for _, services := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("services=%d", services), func(b *testing.B) {
			base := ringCatalog(services, 10)
			srv := serve.New(serve.Options{Translate: translate.DefaultConfig()})
			srv.Apply(base, time.Now())
			// svc-3's callers (svc-0..2) have asked: their snapshots are
			// kept, as a connected Envoy's would be.
			for i := range 3 {
				for j := range 10 {
					if _, _, _, err := srv.Resources(fmt.Sprintf("svc-%d-%d", i, j)); err != nil {
						b.Fatal(err)
					}
				}
			}
			runtime.GC() // the first Apply's garbage is not the change's
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				svc3, _ := base.Services.Get("svc-3")
				flipped := slices.Clone(svc3)
				if i%2 == 0 {
					flipped[0].Status = catalog.StatusCritical
				}
				snap := &catalog.Snapshot{Index: base.Index + uint64(i) + 1, SeenAt: time.Now(),
					Services: base.Services.Set("svc-3", flipped), Policies: base.Policies}
				srv.Apply(snap, time.Now())
			}
		})
	}
}
