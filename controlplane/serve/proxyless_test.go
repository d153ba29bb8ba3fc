package serve_test

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/translate"
)

// The tests here prove the proxyless flavour with real RPCs: grpc-go's
// own xDS client, given a bootstrap that points at the control plane,
// dials xds:///user and sends health checks to plain gRPC servers that
// stand for user's instances. What the control plane serves decides where
// every RPC goes.

// backend is one gRPC server standing for an instance.
type backend struct {
	id   string
	port int
}

func startBackend(t *testing.T, id string) backend {
	t.Helper()
	return startBackendWith(t, id, health.NewServer())
}

// answering is a health service that answers every check after a delay,
// with an error when code is not OK.
type answering struct {
	healthpb.UnimplementedHealthServer
	delay time.Duration
	code  codes.Code
}

func (a answering) Check(ctx context.Context, _ *healthpb.HealthCheckRequest) (*healthpb.HealthCheckResponse, error) {
	select {
	case <-time.After(a.delay):
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if a.code != codes.OK {
		return nil, status.Error(a.code, "refused by the test")
	}
	return &healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}, nil
}

func startBackendWith(t *testing.T, id string, svc healthpb.HealthServer) backend {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	healthpb.RegisterHealthServer(srv, svc)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return backend{id: id, port: lis.Addr().(*net.TCPAddr).Port}
}

// proxylessShop is order-1 calling user, whose instances are backends.
func proxylessShop(backends []backend, versions []string) *shop {
	s := &shop{insts: map[string]catalog.Instance{}, index: 10}
	s.add("order", "order-1", "user", "")
	for i, b := range backends {
		s.add("user", b.id, "", "")
		s.set(b.id, func(in *catalog.Instance) {
			in.Address = "127.0.0.1"
			in.Meta["mesh_grpc_port"] = strconv.Itoa(b.port)
			in.Meta["version"] = versions[i]
		})
	}
	return s
}

// dialUser is order-1's gRPC client of xds:///user, configured by the
// control plane at addr.
func dialUser(t *testing.T, addr string) healthpb.HealthClient {
	t.Helper()
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "order-1", "cluster": "order", "metadata": {%q: %q}}
	}`, addr, translate.MetaFlavor, translate.FlavorProxyless)
	rb, err := xds.NewXDSResolverWithConfigForTesting([]byte(bootstrap))
	if err != nil {
		t.Fatal(err)
	}
	cc, err := grpc.NewClient("xds:///user", grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithResolvers(rb))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return healthpb.NewHealthClient(cc)
}

// failures counts the failed calls of a spread.
func failures(got map[string]int) int {
	n := 0
	for k, v := range got {
		if strings.HasPrefix(k, "error: ") {
			n += v
		}
	}
	return n
}

// spread makes n RPCs and counts them by the backend that answered.
func spread(t *testing.T, c healthpb.HealthClient, backends []backend, n int) map[string]int {
	t.Helper()
	byPort := map[int]string{}
	for _, b := range backends {
		byPort[b.port] = b.id
	}
	out := map[string]int{}
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		var p peer.Peer
		_, err := c.Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Peer(&p))
		cancel()
		if err != nil {
			out["error: "+err.Error()]++
			continue
		}
		out[byPort[p.Addr.(*net.TCPAddr).Port]]++
	}
	return out
}

func TestProxylessClientFollowsEndpoints(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackend(t, "user-1"), startBackend(t, "user-2"), startBackend(t, "user-3")}
	sh := proxylessShop(backends, []string{"v1", "v1", "v1"})
	h.srv.Apply(sh.snapshot(), time.Now())
	c := dialUser(t, h.addr)

	// Round robin picks among the connections that are ready: the first
	// calls may all go to the first one up.
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 30)
		return got["user-1"] > 0 && got["user-2"] > 0 && got["user-3"] > 0, fmt.Sprintf("RPCs by instance: %v", got)
	})
	if n := h.node("order-1"); n.Type != "proxyless" || !n.Connected {
		t.Errorf("order-1 is %q (connected %v), want a connected proxyless node", n.Type, n.Connected)
	}

	// user-2 goes critical: once the client has the new load assignment,
	// it receives nothing.
	sh.set("user-2", func(i *catalog.Instance) { i.Status = catalog.StatusCritical })
	h.srv.Apply(sh.snapshot(), time.Now())
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 30)
		return got["user-2"] == 0 && got["user-1"] > 0 && got["user-3"] > 0, fmt.Sprintf("RPCs by instance: %v", got)
	})

	// A new instance receives RPCs.
	more := append(backends, startBackend(t, "user-4"))
	sh.add("user", "user-4", "", "")
	sh.set("user-4", func(in *catalog.Instance) {
		in.Address = "127.0.0.1"
		in.Meta["mesh_grpc_port"] = strconv.Itoa(more[3].port)
	})
	h.srv.Apply(sh.snapshot(), time.Now())
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, more, 30)
		return got["user-4"] > 0, fmt.Sprintf("RPCs by instance: %v", got)
	})
}

func TestProxylessTrafficSplit(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackend(t, "user-1"), startBackend(t, "user-2")}
	sh := proxylessShop(backends, []string{"v1", "v2"})
	snap := sh.snapshot()
	snap.Policies = pmap.FromMap(map[string][]byte{"user": []byte(`{"traffic_split":[{"version":"v1","weight":80},{"version":"v2","weight":20}]}`)})
	h.srv.Apply(snap, time.Now())
	c := dialUser(t, h.addr)

	const n = 1000
	got := spread(t, c, backends, n)
	share := float64(got["user-2"]) / n
	// 20% of 1,000 weighted random picks: the standard deviation is
	// about 1.3 points; 6 points is over four of them.
	if share < 0.14 || share > 0.26 {
		t.Errorf("v2 received %.1f%% of %d RPCs, want 20%% ± 6: %v", 100*share, n, got)
	}
	if got["user-1"]+got["user-2"] != n {
		t.Errorf("failed RPCs: %v", got)
	}
}

// withPolicy applies the shop with user's policy.
func withPolicy(h *harness, sh *shop, policy string) {
	snap := sh.snapshot()
	snap.Policies = pmap.FromMap(map[string][]byte{"user": []byte(policy)})
	h.srv.Apply(snap, time.Now())
}

func TestProxylessRouteTimeout(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackendWith(t, "user-1", answering{delay: 3 * time.Second})}
	withPolicy(h, proxylessShop(backends, []string{"v1"}), `{"timeout":"200ms","retries":{"attempts":0}}`)
	c := dialUser(t, h.addr)

	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	// The first call also waits for the client's configuration.
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("err = %v, want DEADLINE_EXCEEDED from the route's timeout", err)
	}
	// The route's 200ms bounds the next one, far below the backend's 3 s
	// and the caller's 5 s.
	start := time.Now()
	if _, err := c.Check(ctx, &healthpb.HealthCheckRequest{}); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("second call: err = %v", err)
	}
	if took := time.Since(start); took < 150*time.Millisecond || took > 2*time.Second {
		t.Errorf("second call took %s, want about 200ms", took)
	}
}

func TestProxylessRetriesOnUnavailable(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{
		startBackendWith(t, "user-1", answering{code: codes.Unavailable}),
		startBackend(t, "user-2"),
	}
	sh := proxylessShop(backends, []string{"v1", "v1"})
	c := dialUser(t, h.addr)

	// Without retries, the calls that reach user-1 fail.
	withPolicy(h, sh, `{"retries":{"attempts":0}}`)
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 40)
		return failures(got) > 0, fmt.Sprintf("no call failed: %v", got)
	})
	// With retries on UNAVAILABLE, every call ends at user-2.
	withPolicy(h, sh, `{"retries":{"attempts":3,"backoff_base":"1ms","backoff_max":"5ms"}}`)
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 40)
		return got["user-2"] == 40, fmt.Sprintf("RPCs by instance: %v", got)
	})
}

// TestProxylessServerServesItsInboundListener: an app's gRPC server is an
// xDS server; it serves only once the control plane gave it the inbound
// listener of its address, and then answers calls routed to it.
func TestProxylessServerServesItsInboundListener(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := backend{id: "user-1", port: lis.Addr().(*net.TCPAddr).Port}
	serving := make(chan error, 8)
	bootstrap := fmt.Sprintf(`{
		"xds_servers": [{"server_uri": %q, "channel_creds": [{"type": "insecure"}], "server_features": ["xds_v3"]}],
		"node": {"id": "user-1", "cluster": "user", "metadata": {%q: %q}},
		"server_listener_resource_name_template": %q
	}`, h.addr, translate.MetaFlavor, translate.FlavorProxyless, translate.ServerListenerTemplate)
	srv, err := xds.NewGRPCServer(grpc.Creds(insecure.NewCredentials()), xds.BootstrapContentsForTesting([]byte(bootstrap)),
		xds.ServingModeCallback(func(_ net.Addr, args xds.ServingModeChangeArgs) {
			if args.Mode == connectivity.ServingModeServing {
				serving <- nil
			} else if args.Err != nil {
				serving <- args.Err
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)

	h.srv.Apply(proxylessShop([]backend{b}, []string{"v1"}).snapshot(), time.Now())
	select {
	case err := <-serving:
		if err != nil {
			t.Fatalf("the xDS server did not serve: %v", err)
		}
	case <-time.After(wait):
		t.Fatal("the xDS server never got its inbound listener")
	}
	if got := spread(t, dialUser(t, h.addr), []backend{b}, 10); got["user-1"] != 10 {
		t.Errorf("RPCs by instance: %v", got)
	}
}

func TestProxylessFailurePercentageEjection(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{
		startBackendWith(t, "user-1", answering{code: codes.Unavailable}),
		startBackend(t, "user-2"),
		startBackend(t, "user-3"),
	}
	withPolicy(h, proxylessShop(backends, []string{"v1", "v1", "v1"}), `{"retries":{"attempts":0},
		"outlier_detection":{"interval":"100ms","base_ejection_time":"30s","max_ejection_percent":50,
			"failure_percentage_threshold":50,"failure_percentage_minimum_hosts":2,"failure_percentage_request_volume":5}}`)
	c := dialUser(t, h.addr)

	// Calls fail while user-1 is in rotation, then none once it is
	// ejected (round robin would keep picking it otherwise).
	failed := 0
	poll.Until(t, wait, func() (bool, string) {
		got := spread(t, c, backends, 30)
		failed += failures(got)
		return failed > 0 && got["user-2"]+got["user-3"] == 30, fmt.Sprintf("%d failed so far; RPCs by instance: %v", failed, got)
	})
}

func TestProxylessCircuitBreaker(t *testing.T) {
	h := start(t, translate.DefaultConfig())
	backends := []backend{startBackendWith(t, "user-1", answering{delay: 500 * time.Millisecond})}
	withPolicy(h, proxylessShop(backends, []string{"v1"}), `{"retries":{"attempts":0},"circuit_breaker":{"max_requests":1}}`)
	c := dialUser(t, h.addr)
	if got := spread(t, c, backends, 1); got["user-1"] != 1 { // the client has its configuration
		t.Fatalf("first call: %v", got)
	}

	const calls = 4
	errs := make(chan error, calls)
	for range calls {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			_, err := c.Check(ctx, &healthpb.HealthCheckRequest{})
			errs <- err
		}()
	}
	var ok, refused int
	for range calls {
		switch err := <-errs; status.Code(err) {
		case codes.OK:
			ok++
		case codes.Unavailable:
			refused++
		default:
			t.Errorf("unexpected error: %v", err)
		}
	}
	// At most one call is in flight at a time: the others are refused at
	// once rather than queued.
	if ok < 1 || refused < 1 {
		t.Errorf("%d calls answered, %d refused by the circuit breaker; want both", ok, refused)
	}
}
