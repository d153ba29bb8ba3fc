package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"

	"github.com/hashicorp/consul/api"
	"github.com/meshop/meshop/services/kit/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshop/meshop/controlplane/debug"
	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
	"github.com/meshop/meshop/localenv"
)

type cp struct {
	xds, debug string
	logs       *localenv.LogBuffer
	operator   string // a Consul token with operator:read, for the debug port
	consul     *localenv.Consul
	tls        *tls.Config // a client's, checking the control plane's identity
}

// envoy starts a simulated Envoy as a real one is bootstrapped: over TLS,
// with its service's Consul ACL token (o.Cluster's service identity).
func (c *cp) envoy(t *testing.T, o envoysim.Options) *envoysim.Envoy {
	t.Helper()
	token, err := c.consul.ServiceToken(context.Background(), o.Cluster)
	if err != nil {
		t.Fatal(err)
	}
	o.Token, o.TLS = token, c.tls
	return envoysim.StartT(t, c.xds, o)
}

// startCP runs the control plane in-process, exactly as main does, on
// free ports against the given Consul.
func startCP(t *testing.T, consul *localenv.Consul, extraEnv ...string) *cp {
	t.Helper()
	token, err := consul.ControlPlaneToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ports, err := localenv.FreePorts(2)
	if err != nil {
		t.Fatal(err)
	}
	c := &cp{xds: "127.0.0.1:" + strconv.Itoa(ports[0]), debug: "127.0.0.1:" + strconv.Itoa(ports[1]), logs: &localenv.LogBuffer{},
		operator: consul.ManagementToken(), consul: consul}
	c.tls = workload.ClientTLS(func() (*x509.CertPool, error) { return consulRoots(consul) }, workload.ControlPlane)
	env := map[string]string{
		"CONSUL_HTTP_ADDR":  consul.HTTPAddr(),
		"CONSUL_HTTP_TOKEN": token,
		"XDS_ADDR":          c.xds,
		"DEBUG_ADDR":        c.debug,
		"CONSUL_WAIT":       "10s",
		"SHUTDOWN_GRACE":    "2s",
		"CONSUL_SETTLE":     "3s",
	}
	for i := 0; i+1 < len(extraEnv); i += 2 {
		env[extraEnv[i]] = extraEnv[i+1]
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, func(k string) string { return env[k] }, c.logs, io.Discard) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run() = %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("run() did not return within 10s of cancel")
		}
		if t.Failed() {
			t.Logf("control plane logs:\n%s", c.logs.String())
		}
	})
	poll.Until(t, 20*time.Second, func() (bool, string) {
		code, body := c.get(t, "/ready")
		return code == http.StatusOK, fmt.Sprintf("/ready: %d %s", code, body)
	})
	return c
}

// consulRoots are the Connect CA's roots.
func consulRoots(consul *localenv.Consul) (*x509.CertPool, error) {
	client, err := api.NewClient(&api.Config{Address: consul.HTTPAddr(), Token: consul.ManagementToken()})
	if err != nil {
		return nil, err
	}
	roots, _, err := client.Agent().ConnectCARoots(nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots.Roots {
		pool.AppendCertsFromPEM([]byte(r.RootCertPEM))
	}
	return pool, nil
}

// get requests path on the debug port as the operator.
func (c *cp) get(t *testing.T, path string) (int, string) {
	t.Helper()
	return c.getAs(t, path, c.operator)
}

func (c *cp) getAs(t *testing.T, path, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+c.debug+path, nil)
	req.Header.Set("X-Consul-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func dumpClusters(t *testing.T, body string) []string {
	t.Helper()
	names, err := debug.ClusterNames([]byte(body))
	if err != nil {
		t.Fatalf("%v\n%s", err, body)
	}
	return names
}

// registerShop registers the six services of DESIGN §2 as the services do.
func registerShop(a *consultest.Agent) {
	port := 21000
	reg := func(svc, id, upstreams, prefixes string) {
		port++
		a.Register(consultest.Instance{Service: svc, ID: id, Port: port, AppPort: strconv.Itoa(port + 1000), Upstreams: upstreams, Prefixes: prefixes})
	}
	reg("auth", "auth-1", "user", "/auth")
	reg("user", "user-1", "", "/users")
	reg("user", "user-2", "", "/users")
	reg("product", "product-1", "", "/products")
	reg("order", "order-1", "user,product,payment", "/orders")
	reg("payment", "payment-1", "", "/payments")
	reg("notification", "notification-1", "user", "/notifications")
}

// TestOrderConfigDump is the "done when": the config dump of an
// order instance registered with mesh_upstreams=user,product,payment shows
// exactly those three clusters, local_app and the collector.
func TestOrderConfigDump(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	c := startCP(t, consul)

	var body string
	poll.Until(t, 10*time.Second, func() (bool, string) {
		var code int
		code, body = c.get(t, "/debug/config_dump?node=order-1")
		return code == http.StatusOK, body
	})
	want := []string{"local_app", "otel_collector", "svc_payment", "svc_product", "svc_user"}
	if got := dumpClusters(t, body); !slices.Equal(got, want) {
		t.Errorf("order-1 clusters = %v, want %v", got, want)
	}
	// The edge routes all six public services.
	_, edge := c.get(t, "/debug/config_dump?node=edge-1")
	wantEdge := []string{"otel_collector", "svc_auth", "svc_notification", "svc_order", "svc_payment", "svc_product", "svc_user"}
	if got := dumpClusters(t, edge); !slices.Equal(got, wantEdge) {
		t.Errorf("edge clusters = %v, want %v", got, wantEdge)
	}
	if code, body := c.get(t, "/metrics"); code != 200 || !strings.Contains(body, "meshop_controlplane_consul_last_index") {
		t.Errorf("/metrics = %d", code)
	}
	// Consul decides who is an operator: neither anonymous nor the
	// control plane's own token (no operator:read) may dump a node.
	cpToken, err := consul.ControlPlaneToken(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for token, want := range map[string]int{"": http.StatusUnauthorized, cpToken: http.StatusForbidden} {
		if code, body := c.getAs(t, "/debug/config_dump?node=order-1", token); code != want {
			t.Errorf("config_dump with token %.8q = %d, want %d: %s", token, code, want, body)
		}
	}
}

// TestConsulToEnvoys drives simulated Envoys through health flips, a bad
// policy and a Consul restart against the real Consul.
func TestConsulToEnvoys(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	agent.PutPolicy("user", `{"timeout":"2s"}`)
	c := startCP(t, consul)

	// Every sidecar that calls user: order (SotW), auth and notification
	// (delta); plus one that does not (payment) and the edge.
	callers := []*envoysim.Envoy{
		c.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order"}),
		c.envoy(t, envoysim.Options{ID: "auth-1", Cluster: "auth", Delta: true}),
		c.envoy(t, envoysim.Options{ID: "notification-1", Cluster: "notification", Delta: true}),
		c.envoy(t, envoysim.Options{ID: "edge-1", Cluster: "edge"}),
	}
	payment := c.envoy(t, envoysim.Options{ID: "payment-1", Cluster: "payment", Delta: true})
	both := []string{"user-1", "user-2"}
	for _, e := range callers {
		e.Must(t, 10*time.Second, "both user instances", func(s envoysim.State) bool { return slices.Equal(s.Hosts("svc_user"), both) })
	}
	payment.Must(t, 10*time.Second, "payment config", func(s envoysim.State) bool {
		return s.Routes[translate.RouteInbound] != nil && s.Routes[translate.RouteOutbound] != nil && s.Routes[translate.RouteExpose] != nil
	})

	// A critical check reaches every caller within a second.
	start := time.Now()
	agent.Fail("user-2")
	for _, e := range callers {
		e.Must(t, 2*time.Second, "user-2 removed", func(s envoysim.State) bool { return slices.Equal(s.Hosts("svc_user"), []string{"user-1"}) })
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("critical check took %s to reach every caller, want under 1s", took)
	} else {
		t.Logf("critical check reached every caller in %s", took)
	}
	agent.Pass("user-2")
	for _, e := range callers {
		e.Must(t, 2*time.Second, "user-2 back", func(s envoysim.State) bool { return slices.Equal(s.Hosts("svc_user"), both) })
	}
	for _, r := range payment.History() {
		if slices.Contains(r.Names, "svc_user") {
			t.Errorf("payment (does not call user) received svc_user: %+v", r)
		}
	}

	// The good policy is in force; a bad one is rejected and the last good
	// one stays.
	order := callers[0]
	userTimeout := func(s envoysim.State) string {
		for _, vh := range s.Routes["outbound"].GetVirtualHosts() {
			if vh.GetName() == "user" {
				return vh.GetRoutes()[0].GetRoute().GetTimeout().AsDuration().String()
			}
		}
		return "no route"
	}
	order.Must(t, 5*time.Second, "user timeout 2s", func(s envoysim.State) bool { return userTimeout(s) == "2s" })
	agent.PutPolicy("user", `{"timeout":"2s","retries":{"attempts":"many"}}`)
	poll.Until(t, 5*time.Second, func() (bool, string) {
		_, body := c.get(t, "/debug/model")
		return strings.Contains(body, `"source": "last_good"`) && strings.Contains(body, "mesh/policy/user"), body
	})
	if s := order.State(); userTimeout(s) != "2s" {
		t.Errorf("user timeout after a bad policy = %s, want the last good 2s", userTimeout(s))
	}
	if _, body := c.get(t, "/metrics"); !strings.Contains(body, `meshop_controlplane_validation_failures_total{kind="policy",stage="model"} 1`) {
		t.Errorf("policy rejection not counted:\n%s", grep(body, "validation_failures"))
	}
	if !strings.Contains(c.logs.String(), `"kind":"policy"`) {
		t.Error("policy rejection not logged")
	}
	agent.PutPolicy("user", `{"timeout":"3s"}`)
	order.Must(t, 5*time.Second, "user timeout 3s", func(s envoysim.State) bool { return userTimeout(s) == "3s" })

	// Consul restarts: no push while it is away (above all no empty one),
	// and changes flow again once it is back.
	cut := len(order.History())
	if err := consul.Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	poll.Until(t, 10*time.Second, func() (bool, string) {
		_, body := c.get(t, "/debug/nodes")
		return strings.Contains(body, `"reachable": false`), "catalog still reachable"
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := consul.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	// A restarted agent reports every check critical until it runs again
	// (for TTL checks: until the app's next heartbeat). The control plane
	// holds those downgrades for CONSUL_SETTLE; the apps heartbeat.
	for _, id := range []string{"auth-1", "user-1", "user-2", "product-1", "order-1", "payment-1", "notification-1"} {
		agent.Pass(id)
	}
	poll.Until(t, 20*time.Second, func() (bool, string) {
		_, body := c.get(t, "/debug/nodes")
		return strings.Contains(body, `"reachable": true`) && !strings.Contains(body, "settling_until"), "catalog not reachable and settled again"
	})
	agent.Fail("user-1")
	for _, e := range callers {
		e.Must(t, 5*time.Second, "user-1 removed after restart", func(s envoysim.State) bool {
			return slices.Equal(s.Hosts("svc_user"), []string{"user-2"})
		})
	}
	for _, r := range order.History()[cut:] {
		if r.TypeURL == resource.EndpointType {
			for name, n := range r.Endpoints {
				if n == 0 {
					t.Errorf("empty load assignment %s pushed around the Consul restart (version %s)", name, r.Version)
				}
			}
		}
		if r.TypeURL == resource.ClusterType && len(r.Names) != 5 {
			t.Errorf("cluster push with %v around the Consul restart", r.Names)
		}
	}
	// Once per outage, not per query or retry. While a graceful stop
	// closes its internals, Consul may answer one query with 500 and its
	// retry with 200 a few milliseconds before it stops listening: that is
	// an outage of its own, so two lines are right then.
	if n := strings.Count(c.logs.String(), "consul unreachable"); n < 1 || n > 2 {
		t.Errorf("'consul unreachable' logged %d times, want once per outage (1, or 2 if the graceful stop flapped)", n)
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestXDSStreamsNeedTheirNodesToken: a stream is served only over TLS and
// with a token of the node's own service, for a registered instance of it;
// every refusal is PermissionDenied, counted and listed on /debug/nodes.
func TestXDSStreamsNeedTheirNodesToken(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	c := startCP(t, consul)
	ctx := context.Background()
	orderToken, err := consul.ServiceToken(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	paymentToken, err := consul.ServiceToken(ctx, "payment")
	if err != nil {
		t.Fatal(err)
	}

	if err := firstResponse(t, c.xds, c.tls, orderToken, "order-1", "order"); err != nil {
		t.Fatalf("order-1 with order's token: %v", err)
	}
	for _, tc := range []struct{ name, token, id, cluster string }{
		{"no token", "", "order-1", "order"},
		{"a forged token", "6c1f3d2e-0000-4000-8000-000000000000", "order-1", "order"},
		{"another service's token", paymentToken, "order-1", "order"},
		{"an instance of another service", orderToken, "payment-1", "order"},
	} {
		if err := firstResponse(t, c.xds, c.tls, tc.token, tc.id, tc.cluster); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v, want PermissionDenied", tc.name, err)
		}
	}
	if err := firstResponse(t, c.xds, nil, orderToken, "order-1", "order"); err == nil {
		t.Error("a plaintext connection was served")
	}

	_, body := c.get(t, "/debug/nodes")
	for _, reason := range []string{"no_token", "unknown_token", "wrong_service", "not_an_instance"} {
		if !strings.Contains(body, `"reason": "`+reason+`"`) {
			t.Errorf("/debug/nodes lists no refusal for %s:\n%s", reason, body)
		}
	}
	if _, m := c.get(t, "/metrics"); !strings.Contains(m, `meshop_xds_streams_refused_total{reason="wrong_service"} 1`) {
		t.Errorf("refusals not counted:\n%s", grep(m, "refused"))
	}
}

// firstResponse opens an ADS stream as node id of cluster and returns the
// error of its first response (nil: it was served).
func firstResponse(t *testing.T, addr string, tlsConf *tls.Config, token, id, cluster string) error {
	t.Helper()
	creds := insecure.NewCredentials()
	if tlsConf != nil {
		creds = credentials.NewTLS(tlsConf)
	}
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "x-consul-token", token)
	}
	s, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		return err
	}
	if err := s.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: id, Cluster: cluster}, TypeUrl: resource.ClusterType}); err != nil && err != io.EOF {
		return err
	}
	_, err = s.Recv()
	return err
}

// TestEnvoysGetTheirLeavesFromConsul: with MESH_MTLS on, an Envoy that
// connected with its service's token receives, as SDS secrets, a leaf of
// its own service from Consul's Connect CA and Consul's roots; the config
// dump shows the secret without its private key.
func TestEnvoysGetTheirLeavesFromConsul(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	c := startCP(t, consul, "MESH_MTLS", "true")
	secrets := []string{translate.SecretIdentity, translate.SecretRoots}
	order := c.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order", Secrets: secrets})
	var uri string
	order.Must(t, 20*time.Second, "order's leaf and Consul's roots", func(s envoysim.State) bool {
		chain := s.Secrets[translate.SecretIdentity].GetTlsCertificate().GetCertificateChain().GetInlineString()
		key := s.Secrets[translate.SecretIdentity].GetTlsCertificate().GetPrivateKey().GetInlineString()
		roots := s.Secrets[translate.SecretRoots].GetValidationContext().GetTrustedCa().GetInlineString()
		cert, err := tls.X509KeyPair([]byte(chain), []byte(key))
		if err != nil || roots == "" {
			return false
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil || len(leaf.URIs) == 0 {
			return false
		}
		uri = leaf.URIs[0].String()
		return true
	})
	if !strings.HasSuffix(uri, "/svc/order") {
		t.Errorf("order's leaf is %s, want order's SPIFFE ID", uri)
	}
	_, dump := c.get(t, "/debug/config_dump?node=order-1")
	if strings.Contains(dump, "PRIVATE KEY") || !strings.Contains(dump, "[redacted]") {
		t.Errorf("the config dump shows a private key, or no secret:\n%s", grep(dump, "private"))
	}
}
