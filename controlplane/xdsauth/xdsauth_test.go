package xdsauth

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// directory is a Directory in memory.
type directory struct {
	mu        sync.Mutex
	tokens    map[string][]string // token → service identities
	instances map[string]string   // instance id → service
	disabled  bool
	down      bool // Consul cannot be asked
	lookups   int
}

func (d *directory) TokenServices(_ context.Context, token string) ([]string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lookups++
	if d.down {
		return nil, errors.New("consul: 429 Too Many Requests")
	}
	if d.disabled {
		return nil, ErrACLsDisabled
	}
	s, ok := d.tokens[token]
	if !ok {
		return nil, ErrUnknownToken
	}
	return s, nil
}

func (d *directory) IsInstance(_ context.Context, service, id string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.instances[id] == service, nil
}

func (d *directory) revoke(token string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	delete(d.tokens, token)
}

func (d *directory) setIdentities(token string, services ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.tokens[token] = services
}

func (d *directory) lookupCount() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.lookups
}

// serveADS serves go-control-plane's ADS behind the authenticator and
// returns a client connection to it.
func serveADS(t *testing.T, a *Authenticator) *grpc.ClientConn {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.StreamInterceptor(a.StreamInterceptor()))
	cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	for _, id := range []string{"payment-1", "order-1", "edge-1"} {
		snap, _ := cachev3.NewSnapshot("1", map[resourcev3.Type][]types.Resource{resourcev3.ClusterType: {&clusterv3.Cluster{Name: "c"}}})
		cache.SetSnapshot(context.Background(), id, snap)
	}
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(context.Background(), cache, nil))
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func newAuthenticator(d Directory, ttl time.Duration) (*Authenticator, *prometheus.Registry) {
	reg := prometheus.NewRegistry()
	return New(Options{Directory: d, TTL: ttl, RegistrationWait: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler), Metrics: reg}), reg
}

// open opens an ADS stream with token (none if empty) as node id of
// cluster and asks for clusters; it returns the stream and the first
// answer's error (nil: served).
func open(t *testing.T, cc *grpc.ClientConn, token, id, cluster string) (discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, TokenHeader, token)
	}
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id, Cluster: cluster}, TypeUrl: resourcev3.ClusterType}); err != nil && err != io.EOF {
		t.Fatal(err)
	}
	_, err = s.Recv()
	return s, err
}

func TestStreamsAreServedOnlyForTheTokensOwnInstances(t *testing.T) {
	d := &directory{
		tokens:    map[string][]string{"pay": {"payment"}, "edge": {"edge"}, "mgmt": nil},
		instances: map[string]string{"payment-1": "payment", "order-1": "order"},
	}
	a, reg := newAuthenticator(d, time.Minute)
	cc := serveADS(t, a)

	for _, tc := range []struct {
		name, token, id, cluster, reason string
	}{
		{"own instance", "pay", "payment-1", "payment", ""},
		{"edge", "edge", "edge-1", "edge", ""},
		{"no token", "", "payment-1", "payment", "no_token"},
		{"unknown token", "forged", "payment-1", "payment", "unknown_token"},
		{"another service's node", "pay", "order-1", "order", "wrong_service"},
		{"a token without identities", "mgmt", "payment-1", "payment", "wrong_service"},
		{"another service's instance under its own name", "pay", "order-1", "payment", "not_an_instance"},
		{"an edge token as a sidecar", "edge", "payment-1", "edge", "not_an_instance"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := open(t, cc, tc.token, tc.id, tc.cluster)
			if tc.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("got %v, want PermissionDenied", err)
			}
			if got := testutil.ToFloat64(a.refused.WithLabelValues(tc.reason)); got < 1 {
				t.Errorf("meshop_xds_streams_refused_total{reason=%q} = %v", tc.reason, got)
			}
			last := a.Refusals()[len(a.Refusals())-1]
			if last.Reason != tc.reason || last.Peer == "" {
				t.Errorf("last refusal %+v, want reason %s and the peer", last, tc.reason)
			}
		})
	}
	if n, _ := testutil.GatherAndCount(reg, "meshop_xds_streams_refused_total"); n == 0 {
		t.Error("the refusal counter is not registered")
	}
}

func TestAStreamCannotSwitchToAnotherNode(t *testing.T) {
	d := &directory{tokens: map[string][]string{"pay": {"payment"}}, instances: map[string]string{"payment-1": "payment", "payment-2": "payment", "order-1": "order"}}
	a, _ := newAuthenticator(d, time.Minute)
	s, err := open(t, serveADS(t, a), "pay", "payment-1", "payment")
	if err != nil {
		t.Fatal(err)
	}
	s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "order-1", Cluster: "order"}, TypeUrl: resourcev3.ListenerType})
	for {
		if _, err = s.Recv(); err != nil {
			break
		}
	}
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("got %v, want PermissionDenied", err)
	}
}

func TestARevokedTokensStreamEndsWithinTheTTL(t *testing.T) {
	d := &directory{tokens: map[string][]string{"pay": {"payment"}}, instances: map[string]string{"payment-1": "payment"}}
	a, _ := newAuthenticator(d, 200*time.Millisecond)
	s, err := open(t, serveADS(t, a), "pay", "payment-1", "payment")
	if err != nil {
		t.Fatal(err)
	}
	d.revoke("pay")
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream of a revoked token is still open after 25 TTLs")
	}
}

func TestWithoutACLsEveryStreamIsServed(t *testing.T) {
	a, _ := newAuthenticator(&directory{disabled: true}, time.Minute)
	if _, err := open(t, serveADS(t, a), "anything", "payment-1", "payment"); err != nil {
		t.Fatalf("refused against a Consul without ACLs: %v", err)
	}
}

func TestAStreamEndsWhenItsTokenLosesTheNodesIdentity(t *testing.T) {
	d := &directory{tokens: map[string][]string{"pay": {"payment"}}, instances: map[string]string{"payment-1": "payment"}}
	a, _ := newAuthenticator(d, 200*time.Millisecond)
	s, err := open(t, serveADS(t, a), "pay", "payment-1", "payment")
	if err != nil {
		t.Fatal(err)
	}
	d.setIdentities("pay", "order") // the operator moved the token to another service
	done := make(chan error, 1)
	go func() {
		for {
			if _, err := s.Recv(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream is still open after its token lost payment's identity")
	}
}

func TestForgedTokensAreNotAskedOfConsulEveryTime(t *testing.T) {
	d := &directory{tokens: map[string][]string{}, instances: map[string]string{}}
	a, _ := newAuthenticator(d, time.Minute)
	cc := serveADS(t, a)
	for range 5 {
		if _, err := open(t, cc, "forged", "payment-1", "payment"); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("got %v, want PermissionDenied", err)
		}
	}
	if n := d.lookupCount(); n != 1 {
		t.Errorf("Consul asked %d times about one forged token, want once", n)
	}
}

// ctxStream is a server stream with only a context.
type ctxStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (s ctxStream) Context() context.Context { return s.ctx }

// TestExemptServicesSkipTheNodeCheck: a service named in Exempt (CSDS,
// which checks an operator's token itself) is not held to the node
// check; every other stream, ADS first, still is.
func TestExemptServicesSkipTheNodeCheck(t *testing.T) {
	const csds = "envoy.service.status.v3.ClientStatusDiscoveryService"
	a := New(Options{Directory: &directory{tokens: map[string][]string{}}, Exempt: []string{csds}})
	intercept := a.StreamInterceptor()
	for _, tc := range []struct {
		method string
		served bool
	}{
		{"/" + csds + "/StreamClientStatus", true},
		{"/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources", false},
		{"/" + csds + "X/StreamClientStatus", false},
		{csds, false},
	} {
		served := false
		err := intercept(nil, ctxStream{ctx: context.Background()}, &grpc.StreamServerInfo{FullMethod: tc.method},
			func(any, grpc.ServerStream) error { served = true; return nil })
		if served != tc.served || (!tc.served && status.Code(err) != codes.PermissionDenied) {
			t.Errorf("%s: served %v, err %v; want served %v", tc.method, served, err, tc.served)
		}
	}
}

// TestStreamsEndUnavailableWhileConsulCannotBeAsked: a token nobody could
// check is not refused (Envoy would log a refusal that never happened);
// the stream ends Unavailable and Envoy retries.
func TestStreamsEndUnavailableWhileConsulCannotBeAsked(t *testing.T) {
	a, reg := newAuthenticator(&directory{down: true}, time.Minute)
	cc := serveADS(t, a)
	for _, token := range []string{"", "a-token"} {
		if _, err := open(t, cc, token, "payment-1", "payment"); status.Code(err) != codes.Unavailable {
			t.Errorf("token %q while Consul is down: %v, want Unavailable", token, err)
		}
	}
	if n := testutil.CollectAndCount(reg, "meshop_xds_streams_refused_total"); n != 0 {
		t.Errorf("%d refusal series counted while Consul was down, want none", n)
	}
}
