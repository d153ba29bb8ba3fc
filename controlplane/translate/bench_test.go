package translate_test

import (
	"fmt"
	"runtime"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

// bigService is one service with n passing instances.
func bigService(n int) *model.Service {
	svc := &model.Service{Name: "product", Protocol: model.HTTP1, Policy: model.DefaultPolicy()}
	for i := range n {
		reg := &catalog.Instance{ID: fmt.Sprintf("product-%d", i), Service: "product",
			Address: fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255), Port: 15006, Status: catalog.StatusPassing}
		svc.Instances = append(svc.Instances, &model.Instance{Instance: reg, AppPort: 8080, Version: "v1", Protocol: model.HTTP1, AddressOK: true})
	}
	return svc
}

// BenchmarkEndpoints10k translates a service of 10,000 instances into its
// load assignment, and reports the cost per endpoint; the second case adds
// what serve does once per change with it (validation and the marshal
// that hashes it). Run: go test -run '^$' -bench Endpoints10k ./controlplane/translate
func BenchmarkEndpoints10k(b *testing.B) {
	const n = 10_000
	svc := bigService(n)
	prev := translate.Upstream(svc, "", nil) // its Config is reused: only endpoints are built
	for _, tc := range []struct {
		name string
		f    func(b *testing.B)
	}{
		{"translate", func(b *testing.B) {
			if len(translate.Upstream(svc, "", prev).Endpoints[0].GetEndpoints()[0].GetLbEndpoints()) != n {
				b.Fatal("wrong endpoint count")
			}
		}},
		{"translate+validate+marshal", func(b *testing.B) {
			cla := translate.Upstream(svc, "", prev).Endpoints[0]
			if err := translate.Validate(cla); err != nil {
				b.Fatal(err)
			}
			if _, err := (proto.MarshalOptions{Deterministic: true}).Marshal(cla); err != nil {
				b.Fatal(err)
			}
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			for b.Loop() {
				tc.f(b)
			}
			runtime.ReadMemStats(&after)
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/endpoint")
			b.ReportMetric(float64(after.TotalAlloc-before.TotalAlloc)/float64(b.N*n), "B/endpoint")
		})
	}
}
