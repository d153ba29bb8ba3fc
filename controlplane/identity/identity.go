// Package identity keeps the workload identity of the services whose
// Envoys the control plane serves: each service's leaf certificate from
// Consul's Connect CA, which the serving stage hands to the service's nodes
// as SDS secrets.
//
//	xDS stream of a node ──Connected(svc, token)────▶ ┌────────┐
//	                    ──Disconnected(svc, token)─▶ │ Leaves │──OnLeaf(*Leaf)──▶ SDS secrets
//	catalog's roots query ─RootsChanged(root PEM)──▶ └───┬────┘
//	                                                     │ Run: one goroutine, one request at a time
//	                                                     ▼
//	              Consul agent: GET /v1/agent/connect/ca/leaf/<svc>  (non-blocking, a node's token)
//
// Issuing a leaf needs service:write on the service, which the control
// plane's own token does not have: in Consul's model a workload fetches its
// leaf with its own token. So a service's leaf is fetched with the token of
// one of its connected nodes and shared by all of them; a service none of
// whose nodes has connected has no leaf yet. Leaves are renewed once 2/3 of
// their lifetime has passed, and refetched when the active root changes.
// There is no blocking query per service: Run schedules every fetch, so the
// number of connections to Consul does not grow with the number of
// services.
//
// What Consul 1.16.3's agent does with a non-blocking leaf request: it
// returns its cached leaf unless the active root no longer signed it or a
// random point between 60% and 90% of its lifetime has passed, then it
// issues a new one at once. A leaf it has cached it returns to any token,
// even an invalid one; only a request that makes it issue a leaf is
// checked, and answers 403 without service:write on the service.
package identity

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
)

const (
	// fetchTimeout bounds one leaf request.
	fetchTimeout = 10 * time.Second
	// rotationRetry and rotationWindow: after a root change a leaf of the
	// old root is asked for again every rotationRetry, for rotationWindow
	// (the agent's roots may lag the catalog's; Consul's own watchers
	// reissue with up to 30 s of jitter).
	rotationRetry  = 2 * time.Second
	rotationWindow = 60 * time.Second
	// maxBackoff bounds the wait after failed fetches (1 s, doubling).
	maxBackoff = time.Minute
	// maxIdle bounds how long Run sleeps, so a jump of the wall clock
	// delays a renewal by no more than this.
	maxIdle = 5 * time.Minute
)

// Leaf is a service's leaf certificate from Consul's Connect CA. Leaves are
// shared: treat them as read-only.
type Leaf struct {
	Service string
	// CertPEM is the leaf, then any intermediates; KeyPEM its private key.
	CertPEM, KeyPEM         string
	SerialNumber            string
	ValidAfter, ValidBefore time.Time
	// SignedBy is the leaf's AuthorityKeyId in lowercase hex: the
	// SubjectKeyId of the root that signed it (see RootKeyID).
	SignedBy string
}

// Options configure Leaves.
type Options struct {
	// Client is the shared Consul client; every leaf request carries a
	// node's token instead of the client's own.
	Client *api.Client
	// OnLeaf is called with each new leaf of a service, from Run, never
	// concurrently.
	OnLeaf  func(*Leaf)
	Logger  *slog.Logger
	Metrics prometheus.Registerer // nil registers nothing
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
}

// Leaves fetches, shares and renews the leaves of the services with
// connected nodes.
type Leaves struct {
	agent    *api.Agent
	onLeaf   func(*Leaf)
	log      *slog.Logger
	now      func() time.Time
	failures *prometheus.CounterVec
	wake     chan struct{} // the schedule changed; buffered 1

	mu       sync.Mutex
	services map[string]*serviceLeaf
	root     string // SubjectKeyId (hex) of the active root; "" until RootsChanged
}

type serviceLeaf struct {
	tokens   []*nodeToken // of the connected nodes, first connected first
	leaf     *Leaf
	due      time.Time // next fetch, while a node is connected
	failures int       // consecutive failed fetches
	// rotateBy is the end of the retries for a leaf of the active root;
	// zero while the leaf is signed by it.
	rotateBy time.Time
}

type nodeToken struct {
	secret  string
	streams int
}

// New returns Leaves; call Run.
func New(o Options) *Leaves {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	l := &Leaves{
		agent: o.Client.Agent(), onLeaf: o.OnLeaf, log: o.Logger.With("component", "identity"), now: o.Now,
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshop_controlplane_leaf_fetch_failures_total",
			Help: "Failed leaf certificate requests to Consul (after every connected token was tried), by service.",
		}, []string{"service"}),
		wake:     make(chan struct{}, 1),
		services: map[string]*serviceLeaf{},
	}
	if o.Metrics != nil {
		o.Metrics.MustRegister(l.failures, expiryCollector{l})
	}
	return l
}

// Connected records that a stream of a node of service, authenticated
// with token, opened. A service without a leaf, or whose nodes had all
// gone, is fetched at once.
func (l *Leaves) Connected(service, token string) {
	l.mu.Lock()
	s := l.services[service]
	if s == nil {
		s = &serviceLeaf{}
		l.services[service] = s
	}
	if s.leaf == nil || len(s.tokens) == 0 {
		s.due = l.now()
	}
	if i := s.find(token); i >= 0 {
		s.tokens[i].streams++
	} else {
		s.tokens = append(s.tokens, &nodeToken{secret: token, streams: 1})
	}
	l.mu.Unlock()
	l.kick()
}

// Disconnected records that such a stream closed. A service whose last
// node left keeps its leaf, no longer renewed, until it expires.
func (l *Leaves) Disconnected(service, token string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.services[service]
	if s == nil {
		return
	}
	if i := s.find(token); i >= 0 {
		if s.tokens[i].streams--; s.tokens[i].streams == 0 {
			s.tokens = slices.Delete(s.tokens, i, i+1)
		}
	}
	if len(s.tokens) == 0 && s.leaf == nil {
		delete(l.services, service)
	}
}

func (s *serviceLeaf) find(secret string) int {
	return slices.IndexFunc(s.tokens, func(t *nodeToken) bool { return t.secret == secret })
}

// RootsChanged tells Leaves the active root (PEM) the catalog saw: every
// leaf it did not sign is fetched again, every few seconds for up to a
// minute, until the agent returns one it signed.
func (l *Leaves) RootsChanged(activeRootPEM string) {
	root, err := RootKeyID(activeRootPEM)
	if err != nil {
		l.log.Error("cannot read the active root; leaves are not checked against it", "err", err)
		return
	}
	l.mu.Lock()
	if root == l.root {
		l.mu.Unlock()
		return
	}
	l.root = root
	now := l.now()
	for _, s := range l.services {
		if s.leaf != nil && s.leaf.SignedBy != root {
			s.due, s.rotateBy = now, now.Add(rotationWindow)
		}
	}
	l.mu.Unlock()
	l.kick()
}

// Current is service's leaf, nil if it has none.
func (l *Leaves) Current(service string) *Leaf {
	l.mu.Lock()
	defer l.mu.Unlock()
	if s := l.services[service]; s != nil {
		return s.leaf
	}
	return nil
}

// Run fetches leaves when they are due, one at a time, until ctx ends.
func (l *Leaves) Run(ctx context.Context) error {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		name, tokens, wait := l.next()
		if name != "" {
			leaf, err := l.fetch(ctx, name, tokens)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if fresh := l.settle(name, leaf, err); fresh != nil && l.onLeaf != nil {
				l.onLeaf(fresh)
			}
			continue
		}
		timer.Reset(wait)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-l.wake:
		case <-timer.C:
		}
	}
}

func (l *Leaves) kick() {
	select {
	case l.wake <- struct{}{}:
	default:
	}
}

// next returns the service whose fetch is most overdue with its tokens,
// or else how long to sleep. It forgets the services without nodes whose
// leaf has expired.
func (l *Leaves) next() (name string, tokens []string, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	wait = maxIdle
	var due *serviceLeaf
	for n, s := range l.services {
		switch {
		case len(s.tokens) == 0:
			if s.leaf == nil || !now.Before(s.leaf.ValidBefore) {
				delete(l.services, n)
				continue
			}
			wait = min(wait, s.leaf.ValidBefore.Sub(now))
		case s.due.After(now):
			wait = min(wait, s.due.Sub(now))
		case due == nil || s.due.Before(due.due):
			name, due = n, s
		}
	}
	if due == nil {
		return "", nil, wait
	}
	for _, t := range due.tokens {
		tokens = append(tokens, t.secret)
	}
	return name, tokens, 0
}

// fetch asks the agent for service's leaf with each token in turn until
// one is allowed.
func (l *Leaves) fetch(ctx context.Context, service string, tokens []string) (*Leaf, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	var err error
	for _, t := range tokens {
		var cert *api.LeafCert
		cert, _, err = l.agent.ConnectCALeaf(service, (&api.QueryOptions{Token: t}).WithContext(ctx))
		if err == nil {
			return newLeaf(service, cert)
		}
		var status api.StatusError
		if !errors.As(err, &status) || status.Code != http.StatusForbidden {
			break
		}
	}
	return nil, err
}

// settle records the outcome of a fetch and schedules the next one. It
// returns the leaf if it is new.
func (l *Leaves) settle(name string, leaf *Leaf, err error) *Leaf {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.services[name]
	if s == nil {
		return nil // its nodes left before it had a leaf
	}
	now := l.now()
	if err != nil {
		s.failures++
		backoff := min(time.Second<<min(s.failures-1, 6), maxBackoff)
		s.due = now.Add(backoff)
		l.failures.WithLabelValues(name).Inc()
		l.log.Warn("leaf certificate request failed; retrying", "svc", name, "err", err, "retry_in", backoff.String())
		return nil
	}
	s.failures = 0
	var fresh *Leaf
	if s.leaf == nil || s.leaf.CertPEM != leaf.CertPEM {
		s.leaf, fresh = leaf, leaf
		l.log.Info("leaf certificate", "svc", name, "serial", leaf.SerialNumber,
			"valid_before", leaf.ValidBefore, "signed_by", leaf.SignedBy)
	}
	s.due = l.renewAt(name, s, now)
	return fresh
}

// renewAt is when to fetch s's leaf again.
func (l *Leaves) renewAt(name string, s *serviceLeaf, now time.Time) time.Time {
	leaf := s.leaf
	if l.root != "" && leaf.SignedBy != l.root {
		if s.rotateBy.IsZero() {
			s.rotateBy = now.Add(rotationWindow) // fetched just as the roots changed
		}
		if now.Before(s.rotateBy) {
			return now.Add(rotationRetry)
		}
		l.log.Warn("Consul's agent still returns a leaf the active root did not sign; renewing it as usual",
			"svc", name, "waited", rotationWindow.String(), "signed_by", leaf.SignedBy, "active_root", l.root)
	} else {
		s.rotateBy = time.Time{}
	}
	lifetime := leaf.ValidBefore.Sub(leaf.ValidAfter)
	if at := leaf.ValidAfter.Add(lifetime / 3 * 2); at.After(now) {
		return at
	}
	// The agent answered with the leaf it had: it renews at a random point
	// between 60% and 90% of the lifetime, so ask again a little later.
	return now.Add(max(lifetime/30, time.Minute))
}

// newLeaf reads what the agent returned.
func newLeaf(service string, c *api.LeafCert) (*Leaf, error) {
	cert, err := firstCert(c.CertPEM)
	if err != nil {
		return nil, fmt.Errorf("identity: leaf of %s: %w", service, err)
	}
	return &Leaf{
		Service: service, CertPEM: c.CertPEM, KeyPEM: c.PrivateKeyPEM, SerialNumber: c.SerialNumber,
		ValidAfter: c.ValidAfter, ValidBefore: c.ValidBefore, SignedBy: hex.EncodeToString(cert.AuthorityKeyId),
	}, nil
}

// RootKeyID is the SubjectKeyId (lowercase hex) of the first certificate
// in rootPEM: what Leaf.SignedBy of the leaves it signs holds.
func RootKeyID(rootPEM string) (string, error) {
	cert, err := firstCert(rootPEM)
	if err != nil {
		return "", fmt.Errorf("identity: root: %w", err)
	}
	if len(cert.SubjectKeyId) == 0 {
		return "", errors.New("identity: root: no SubjectKeyId")
	}
	return hex.EncodeToString(cert.SubjectKeyId), nil
}

func firstCert(certPEM string) (*x509.Certificate, error) {
	rest := []byte(certPEM)
	for {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			return nil, errors.New("no PEM certificate")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// expiryCollector reports the time left on each leaf at scrape time.
type expiryCollector struct{ l *Leaves }

var expiryDesc = prometheus.NewDesc("meshop_controlplane_leaf_expiry_seconds",
	"Seconds until the service's leaf certificate expires.", []string{"service"}, nil)

func (c expiryCollector) Describe(ch chan<- *prometheus.Desc) { ch <- expiryDesc }

func (c expiryCollector) Collect(ch chan<- prometheus.Metric) {
	c.l.mu.Lock()
	defer c.l.mu.Unlock()
	now := c.l.now()
	for name, s := range c.l.services {
		if s.leaf != nil {
			ch <- prometheus.MustNewConstMetric(expiryDesc, prometheus.GaugeValue, s.leaf.ValidBefore.Sub(now).Seconds(), name)
		}
	}
}
