package serve_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
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
