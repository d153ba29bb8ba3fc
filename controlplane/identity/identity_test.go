package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/localenv"
)

// rig is Leaves running against a real Consul agent (ACLs on, default
// deny), with what a test looks at.
type rig struct {
	*Leaves
	consul   *localenv.Consul
	admin    *api.Client // management token
	reg      *prometheus.Registry
	logs     *lockedBuffer
	requests atomic.Int64 // leaf requests sent to the agent
	clock    *fakeClock

	mu     sync.Mutex
	issued map[string][]*Leaf // OnLeaf calls, by service
}

func newRig(t *testing.T) *rig {
	t.Helper()
	c := localenv.ConsulT(t)
	r := &rig{consul: c, reg: prometheus.NewRegistry(), logs: &lockedBuffer{}, issued: map[string][]*Leaf{},
		clock: &fakeClock{}}
	r.admin = newClient(t, c.HTTPAddr(), c.ManagementToken(), nil)
	// The shared client has no token of its own: every leaf request must
	// carry a node's.
	shared := newClient(t, c.HTTPAddr(), "", countLeafRequests{&r.requests, http.DefaultTransport})
	r.Leaves = New(Options{
		Client: shared, Logger: slog.New(slog.NewJSONHandler(r.logs, nil)), Metrics: r.reg, Now: r.clock.Now,
		OnLeaf: func(leaf *Leaf) {
			r.mu.Lock()
			defer r.mu.Unlock()
			r.issued[leaf.Service] = append(r.issued[leaf.Service], leaf)
		},
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run returned %v, want context.Canceled", err)
		}
		if t.Failed() {
			t.Logf("identity logs:\n%s", r.logs)
		}
	})
	return r
}

func newClient(t *testing.T, addr, token string, transport http.RoundTripper) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address, cfg.Token = addr, token
	if transport != nil {
		cfg.HttpClient = &http.Client{Transport: transport}
	}
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (r *rig) serviceToken(t *testing.T, service string) string {
	t.Helper()
	tok, err := r.consul.ServiceToken(context.Background(), service)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (r *rig) onLeafCalls(service string) []*Leaf {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*Leaf(nil), r.issued[service]...)
}

func (r *rig) activeRoot(t *testing.T) string {
	t.Helper()
	roots, _, err := r.admin.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, root := range roots.Roots {
		if root.Active {
			return root.RootCertPEM
		}
	}
	t.Fatal("Consul has no active root")
	return ""
}

// waitLeaf waits for a leaf of service that cond accepts.
func (r *rig) waitLeaf(t *testing.T, service string, within time.Duration, cond func(*Leaf) bool) *Leaf {
	t.Helper()
	var leaf *Leaf
	poll.Until(t, within, func() (bool, string) {
		leaf = r.Current(service)
		return leaf != nil && cond(leaf), fmt.Sprintf("leaf of %s: %+v", service, leaf)
	})
	return leaf
}

// checkLogs fails if a secret appears in the logs.
func (r *rig) checkLogs(t *testing.T, secrets ...string) {
	t.Helper()
	logs := r.logs.String()
	for _, s := range secrets {
		if strings.Contains(logs, s) {
			t.Errorf("a token appears in the logs:\n%s", logs)
		}
	}
	if strings.Contains(logs, "PRIVATE KEY") {
		t.Errorf("a private key appears in the logs:\n%s", logs)
	}
}

func anyLeaf(*Leaf) bool { return true }

func TestLeafOnlyWithTheServicesToken(t *testing.T) {
	r := newRig(t)
	paymentTok, orderTok := r.serviceToken(t, "payment"), r.serviceToken(t, "order")
	failures := func() float64 { return testutil.ToFloat64(r.failures.WithLabelValues("payment")) }

	// Another service's token: Consul refuses (the agent has no leaf of
	// payment cached; a cached one it would hand to any token).
	r.Connected("payment", orderTok)
	poll.Until(t, 10*time.Second, func() (bool, string) {
		return failures() >= 1 && strings.Contains(r.logs.String(), "403"), "no failure counted and logged"
	})
	if leaf := r.Current("payment"); leaf != nil {
		t.Fatalf("payment has a leaf fetched with order's token: %+v", leaf)
	}

	// A node of payment connects: its token is tried after the refused one.
	r.Connected("payment", paymentTok)
	leaf := r.waitLeaf(t, "payment", 10*time.Second, anyLeaf)
	checkLeaf(t, leaf, "payment", r.activeRoot(t))

	// More nodes of payment share the leaf.
	r.Connected("payment", paymentTok)
	r.Connected("payment", r.serviceToken(t, "payment"))
	if got := r.Current("payment"); got != leaf {
		t.Errorf("the leaf changed when more nodes connected")
	}
	if calls := r.onLeafCalls("payment"); len(calls) != 1 || calls[0] != leaf {
		t.Errorf("OnLeaf calls for payment = %d, want 1 with the current leaf", len(calls))
	}
	r.mu.Lock() // the scheduler's view: payment is due at 2/3 of its lifetime, not now
	due := r.services["payment"].due
	r.mu.Unlock()
	if want := leaf.ValidAfter.Add(leaf.ValidBefore.Sub(leaf.ValidAfter) / 3 * 2); !due.Equal(want) {
		t.Errorf("payment is due at %v, want %v", due, want)
	}

	// The gauge counts down from the 72 h Consul issues.
	if expiry := gauge(t, r.reg, "meshop_controlplane_leaf_expiry_seconds", "payment"); expiry < 71*3600 || expiry > 72*3600 {
		t.Errorf("leaf expiry gauge = %vs, want about 72h", expiry)
	}
	r.checkLogs(t, paymentTok, orderTok)
}

func TestRenewalAndForgetting(t *testing.T) {
	r := newRig(t)
	tok := r.serviceToken(t, "payment")
	r.Connected("payment", tok)
	leaf := r.waitLeaf(t, "payment", 10*time.Second, anyLeaf)
	lifetime := leaf.ValidBefore.Sub(leaf.ValidAfter)

	// Past 2/3 of the lifetime the leaf is asked for again (the agent,
	// whose clock has not moved, returns the one it has).
	before := r.requests.Load()
	r.clock.Set(leaf.ValidAfter.Add(lifetime/3*2 + time.Second))
	r.kick()
	poll.Until(t, 10*time.Second, func() (bool, string) {
		return r.requests.Load() > before, "no leaf request after 2/3 of the lifetime"
	})
	if n := len(r.onLeafCalls("payment")); n != 1 {
		t.Errorf("OnLeaf called %d times for an unchanged leaf, want 1", n)
	}

	// The last node leaves: the leaf stays until it expires, then the
	// service is forgotten.
	r.Disconnected("payment", tok)
	if r.Current("payment") != leaf {
		t.Fatal("the leaf went with the last node")
	}
	r.clock.Set(leaf.ValidBefore)
	r.kick()
	poll.Until(t, 10*time.Second, func() (bool, string) {
		return r.Current("payment") == nil, "an expired leaf without nodes is still kept"
	})
	if n, err := testutil.GatherAndCount(r.reg, "meshop_controlplane_leaf_expiry_seconds"); err != nil || n != 0 {
		t.Errorf("expiry gauges of a forgotten service: %d (%v), want 0", n, err)
	}
	r.checkLogs(t, tok)
}

func TestRootRotation(t *testing.T) {
	r := newRig(t)
	tokens := map[string]string{"payment": r.serviceToken(t, "payment"), "order": r.serviceToken(t, "order")}
	oldRoot := r.activeRoot(t)
	r.RootsChanged(oldRoot)
	old := map[string]*Leaf{}
	for svc, tok := range tokens {
		r.Connected(svc, tok)
		old[svc] = r.waitLeaf(t, svc, 10*time.Second, anyLeaf)
		checkLeaf(t, old[svc], svc, oldRoot)
	}

	// A new key type forces a new root.
	conf, _, err := r.admin.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	conf.Config["PrivateKeyType"] = "ec"
	conf.Config["PrivateKeyBits"] = 384
	if _, err := r.admin.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatal(err)
	}
	newRoot := r.activeRoot(t)
	newID, err := RootKeyID(newRoot)
	if err != nil {
		t.Fatal(err)
	}
	if oldID, _ := RootKeyID(oldRoot); oldID == newID {
		t.Fatal("the root did not change")
	}
	r.RootsChanged(newRoot)
	for svc := range tokens {
		leaf := r.waitLeaf(t, svc, 60*time.Second, func(l *Leaf) bool { return l.SignedBy == newID })
		checkLeaf(t, leaf, svc, newRoot)
		if calls := r.onLeafCalls(svc); len(calls) != 2 || calls[0] != old[svc] || calls[1] != leaf {
			t.Errorf("OnLeaf calls for %s = %d, want the old leaf then the new", svc, len(calls))
		}
	}
	r.checkLogs(t, tokens["payment"], tokens["order"])
}

// checkLeaf checks that leaf is service's, its key matches, and root
// signed it.
func checkLeaf(t *testing.T, leaf *Leaf, service, rootPEM string) {
	t.Helper()
	if leaf.Service != service || leaf.SerialNumber == "" || !leaf.ValidAfter.Before(leaf.ValidBefore) {
		t.Errorf("leaf %s: service %q serial %q valid %v-%v", service, leaf.Service, leaf.SerialNumber, leaf.ValidAfter, leaf.ValidBefore)
	}
	pair, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.KeyPEM))
	if err != nil {
		t.Fatalf("leaf %s: %v", service, err)
	}
	cert, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || !strings.HasSuffix(cert.URIs[0].String(), "/svc/"+service) {
		t.Errorf("leaf %s: URIs %v", service, cert.URIs)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM([]byte(rootPEM))
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("leaf %s: not signed by the root: %v", service, err)
	}
	if id, _ := RootKeyID(rootPEM); leaf.SignedBy != id {
		t.Errorf("leaf %s: SignedBy %s, root's key ID %s", service, leaf.SignedBy, id)
	}
}

func TestRenewAt(t *testing.T) {
	start := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &Leaf{ValidAfter: start, ValidBefore: start.Add(72 * time.Hour), SignedBy: "aa"}
	for _, tc := range []struct {
		name     string
		root     string
		now      time.Time
		rotateBy time.Time
		want     time.Time
	}{
		{name: "fresh leaf: at 2/3", root: "aa", now: start, want: start.Add(48 * time.Hour)},
		{name: "no root known yet", now: start, want: start.Add(48 * time.Hour)},
		{name: "agent kept its leaf past 2/3: again in 1/30", root: "aa", now: start.Add(50 * time.Hour), want: start.Add(50*time.Hour + 144*time.Minute)},
		{name: "old root, new rotation", root: "bb", now: start, want: start.Add(rotationRetry)},
		{name: "old root, within the window", root: "bb", now: start, rotateBy: start.Add(time.Second), want: start.Add(rotationRetry)},
		{name: "old root, window over", root: "bb", now: start, rotateBy: start, want: start.Add(48 * time.Hour)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l := New(Options{Client: &api.Client{}})
			l.root = tc.root
			s := &serviceLeaf{leaf: leaf, rotateBy: tc.rotateBy}
			if got := l.renewAt("payment", s, tc.now); !got.Equal(tc.want) {
				t.Errorf("renewAt = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestTokensRefcounted(t *testing.T) {
	l := New(Options{Client: &api.Client{}})
	l.Connected("payment", "a")
	l.Connected("payment", "a")
	l.Connected("payment", "b")
	l.Disconnected("payment", "a")
	if name, tokens, _ := l.next(); name != "payment" || strings.Join(tokens, ",") != "a,b" {
		t.Errorf("next = %q %v, want payment [a b]", name, tokens)
	}
	l.Disconnected("payment", "a")
	l.Disconnected("payment", "b")
	if l.services["payment"] != nil {
		t.Error("a service without nodes or leaf is kept")
	}
	l.Disconnected("payment", "b") // a stream closing twice does no harm
}

// gauge is the value of the series of metric labelled service.
func gauge(t *testing.T, reg *prometheus.Registry, metric, service string) float64 {
	t.Helper()
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if f.GetName() == metric && len(m.GetLabel()) == 1 && m.GetLabel()[0].GetValue() == service {
				return m.GetGauge().GetValue()
			}
		}
	}
	t.Fatalf("no %s{service=%q}", metric, service)
	return 0
}

// fakeClock runs with the wall clock from a point a test sets.
type fakeClock struct {
	mu     sync.Mutex
	offset time.Duration
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.offset)
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.offset = time.Until(t)
}

type countLeafRequests struct {
	n    *atomic.Int64
	next http.RoundTripper
}

func (c countLeafRequests) RoundTrip(req *http.Request) (*http.Response, error) {
	if strings.HasPrefix(req.URL.Path, "/v1/agent/connect/ca/leaf/") {
		c.n.Add(1)
	}
	return c.next.RoundTrip(req)
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
