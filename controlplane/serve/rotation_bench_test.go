package serve_test

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// BenchmarkRotationStorm is a root rotation as the Envoys see it: every
// service gets a new leaf at once (Consul reissues them all), and each of
// N = 1,000 simulated Envoys (100 services × 10 instances, state of the
// world, over the real ADS server on loopback) must ACK its new
// mesh_identity. One op is one storm; p50-ms, p99-ms and max-ms are the
// times from the new leaves to each Envoy's ACK. Run with
// go test -run '^$' -bench RotationStorm -benchtime 3x ./serve.
func BenchmarkRotationStorm(b *testing.B) {
	const services, perService = 100, 10
	cfg := translate.DefaultConfig()
	cfg.MTLS = true
	srv := serve.New(serve.Options{Translate: cfg})
	snap := ringCatalog(services, perService)
	snap.CA = catalog.CA{TrustDomain: "bench.consul", RootPEMs: []string{"root"}}
	srv.Apply(snap, time.Now())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(lis)
	defer srv.Stop(time.Second)

	leaves := func(round int) {
		for i := range services {
			svc := fmt.Sprintf("svc-%d", i)
			srv.SetLeaf(serve.Leaf{Service: svc, CertPEM: fmt.Sprintf("%s-cert-%d", svc, round), KeyPEM: "key", Serial: fmt.Sprint(round)})
		}
	}
	leaves(0)
	envoys := make([]*envoysim.Envoy, 0, services*perService)
	for i := range services {
		for j := range perService {
			envoys = append(envoys, envoysim.StartT(b, lis.Addr().String(), envoysim.Options{
				ID: fmt.Sprintf("svc-%d-%d", i, j), Cluster: fmt.Sprintf("svc-%d", i),
				Secrets: []string{translate.SecretIdentity, translate.SecretRoots},
			}))
		}
	}
	// holds reports whether an Envoy accepted the leaf of round.
	holds := func(round int) func(envoysim.State) bool {
		suffix := fmt.Sprintf("-cert-%d", round)
		return func(s envoysim.State) bool {
			return strings.HasSuffix(s.Secrets[translate.SecretIdentity].GetTlsCertificate().GetCertificateChain().GetInlineString(), suffix)
		}
	}
	for _, e := range envoys {
		e.Must(b, time.Minute, "the first leaf", holds(0))
	}

	var all []time.Duration
	b.ResetTimer()
	for n := range b.N {
		round := n + 1
		start := time.Now()
		leaves(round)
		took := make([]time.Duration, len(envoys))
		errs := make([]error, len(envoys))
		var wg sync.WaitGroup
		for i, e := range envoys {
			wg.Go(func() {
				errs[i] = e.WaitFor(time.Minute, holds(round))
				took[i] = time.Since(start)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatalf("round %d: %v", round, err)
		}
		all = append(all, took...)
	}
	b.StopTimer()
	slices.Sort(all)
	at := func(q float64) float64 { return float64(all[int(q*float64(len(all)-1))]) / 1e6 }
	b.ReportMetric(at(0.5), "p50-ms")
	b.ReportMetric(at(0.99), "p99-ms")
	b.ReportMetric(at(1), "max-ms")
}
