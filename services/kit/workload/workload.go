// Package workload is a service's identity in the mesh: its leaf
// certificate from Consul's Connect CA (SPIFFE ID
// spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>) and the CA's
// roots, followed with two blocking queries on the local Consul agent.
//
//	Consul agent ──/v1/agent/connect/ca/leaf/<service>──▶ Watcher ──▶ OnChange(Identity)
//	             ──/v1/agent/connect/ca/roots──────────▶
//
// The agent renews a leaf before it expires and reissues it when the roots
// change (with a jitter of up to 30 s), so following the two queries is all
// a holder of the identity has to do. Fetching a leaf needs a token with
// service:write on the service: its service identity.
package workload

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
)

// ControlPlane is the Consul service whose identity the control plane's
// certificate carries: its xDS clients check for it.
const ControlPlane = "controlplane"

// Identity is a service's leaf certificate, its key and the CA roots that
// verify its peers, as PEM.
type Identity struct {
	Service     string
	URI         string // the leaf's SPIFFE ID
	TrustDomain string
	CertPEM     string // the leaf, then any intermediates
	KeyPEM      string
	RootsPEM    string // every active root, concatenated
	ValidBefore time.Time
}

// Certificate parses the leaf and its key.
func (id *Identity) Certificate() (tls.Certificate, error) {
	return tls.X509KeyPair([]byte(id.CertPEM), []byte(id.KeyPEM))
}

// Roots parses the roots into a pool.
func (id *Identity) Roots() (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(id.RootsPEM)) {
		return nil, errors.New("workload: no root certificate in Consul's CA roots")
	}
	return pool, nil
}

// Watcher follows the identity of one service.
type Watcher struct {
	agent   *api.Agent
	service string
	logger  *slog.Logger
	// OnChange is called with every new identity, from Run's goroutines,
	// never concurrently.
	OnChange func(*Identity)

	mu      sync.Mutex
	leaf    *api.LeafCert
	roots   *api.CARootList
	current *Identity
	ready   chan struct{}
}

// NewWatcher follows service's identity through the Consul client c, whose
// token must carry the service's identity.
func NewWatcher(c *api.Client, service string, logger *slog.Logger) *Watcher {
	return &Watcher{agent: c.Agent(), service: service, logger: logger.With("component", "workload"), ready: make(chan struct{})}
}

// Run follows the leaf and the roots until ctx ends. Errors are retried
// with backoff, the last identity stays in force meanwhile.
func (w *Watcher) Run(ctx context.Context) error {
	var g sync.WaitGroup
	g.Go(func() {
		follow(ctx, w.logger, "leaf", func(q *api.QueryOptions) (uint64, error) {
			leaf, meta, err := w.agent.ConnectCALeaf(w.service, q)
			if err == nil {
				w.update(func() { w.leaf = leaf })
				return meta.LastIndex, nil
			}
			return 0, err
		})
	})
	g.Go(func() {
		follow(ctx, w.logger, "roots", func(q *api.QueryOptions) (uint64, error) {
			roots, meta, err := w.agent.ConnectCARoots(q)
			if err == nil {
				w.update(func() { w.roots = roots })
				return meta.LastIndex, nil
			}
			return 0, err
		})
	})
	g.Wait()
	return ctx.Err()
}

// ExpiryMetric is a gauge of the seconds until the leaf in force expires
// (0 before the first): Consul renews leaves long before they expire, so
// a falling value means renewal is failing.
func (w *Watcher) ExpiryMetric() prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name:        "meshop_workload_certificate_expiry_seconds",
		Help:        "Seconds until the workload's leaf certificate from Consul's Connect CA expires.",
		ConstLabels: prometheus.Labels{"service": w.service},
	}, func() float64 {
		if id := w.Current(); id != nil {
			return time.Until(id.ValidBefore).Seconds()
		}
		return 0
	})
}

// Current is the identity in force, nil before the first.
func (w *Watcher) Current() *Identity {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.current
}

// Ready waits for the first identity.
func (w *Watcher) Ready(ctx context.Context) (*Identity, error) {
	select {
	case <-w.ready:
		return w.Current(), nil
	case <-ctx.Done():
		return nil, fmt.Errorf("workload: no certificate for %s from Consul yet: %w", w.service, context.Cause(ctx))
	}
}

// update applies set and, once both halves are known, publishes the
// identity if it changed.
func (w *Watcher) update(set func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	set()
	if w.leaf == nil || w.roots == nil {
		return
	}
	var roots []string
	for _, r := range w.roots.Roots {
		roots = append(roots, strings.TrimSpace(r.RootCertPEM))
	}
	next := &Identity{
		Service: w.service, URI: w.leaf.ServiceURI, TrustDomain: w.roots.TrustDomain,
		CertPEM: w.leaf.CertPEM, KeyPEM: w.leaf.PrivateKeyPEM, RootsPEM: strings.Join(roots, "\n") + "\n",
		ValidBefore: w.leaf.ValidBefore,
	}
	if w.current != nil && *w.current == *next {
		return
	}
	w.current = next
	if w.OnChange != nil {
		w.OnChange(next)
	}
	select {
	case <-w.ready:
	default:
		close(w.ready)
		w.logger.Info("workload identity", "uri", next.URI, "valid_before", next.ValidBefore)
	}
}

// follow runs a blocking query until ctx ends, retrying failures with
// backoff (1 s doubling to 30 s).
func follow(ctx context.Context, logger *slog.Logger, what string, query func(*api.QueryOptions) (uint64, error)) {
	var index uint64
	backoff := time.Second
	for ctx.Err() == nil {
		next, err := query((&api.QueryOptions{WaitIndex: index, WaitTime: 5 * time.Minute}).WithContext(ctx))
		if err == nil {
			if next < index {
				next = 0 // Consul's index went backwards: start over
			}
			index, backoff = next, time.Second
			continue
		}
		if ctx.Err() != nil {
			return
		}
		logger.Warn("Consul Connect CA query failed; retrying", "query", what, "err", err, "retry_in", backoff.String())
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 30*time.Second)
	}
}

// Files are where an identity is written for a reader that watches files
// (gRPC's file_watcher certificate provider).
type Files struct {
	Cert, Key, Roots string
}

// FilesIn are the files of an identity in dir.
func FilesIn(dir string) Files {
	return Files{Cert: filepath.Join(dir, "cert.pem"), Key: filepath.Join(dir, "key.pem"), Roots: filepath.Join(dir, "roots.pem")}
}

// Write writes id to the files, each replaced atomically (the key
// readable by its owner only). A reader that looks between two renames
// finds a key that does not match the certificate; gRPC's file_watcher
// then keeps the pair it had until its next refresh.
func (f Files) Write(id *Identity) error {
	for _, file := range []struct {
		path, data string
		mode       os.FileMode
	}{{f.Key, id.KeyPEM, 0o600}, {f.Cert, id.CertPEM, 0o644}, {f.Roots, id.RootsPEM, 0o644}} {
		if err := writeAtomic(file.path, []byte(file.data), file.mode); err != nil {
			return fmt.Errorf("workload: %w", err)
		}
	}
	return nil
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// PeerOf returns a check for tls.Config.VerifyConnection that accepts a
// peer only if its certificate chains to roots and carries the SPIFFE ID
// of service (spiffe://<trust domain>/ns/default/dc/<dc>/svc/<service>,
// in any datacenter; the trust domain is the roots', whose chain it is). Use it with
// InsecureSkipVerify: Consul's leaves name no host, so Go's host name
// check has nothing to check.
func PeerOf(roots func() (*x509.CertPool, error), service string) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("workload: the peer presented no certificate")
		}
		pool, err := roots()
		if err != nil {
			return err
		}
		leaf := cs.PeerCertificates[0]
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("workload: peer certificate: %w", err)
		}
		want := regexp.MustCompile(`^/ns/default/dc/[^/]+/svc/` + regexp.QuoteMeta(service) + `$`)
		for _, uri := range leaf.URIs {
			if uri.Scheme == "spiffe" && want.MatchString(uri.Path) {
				return nil
			}
		}
		return fmt.Errorf("workload: the peer is not %s (certificate URIs %v)", service, leaf.URIs)
	}
}

// ClientTLS is the TLS configuration of a client of service: it accepts
// only a server whose certificate chains to roots and carries service's
// SPIFFE ID.
func ClientTLS(roots func() (*x509.CertPool, error), service string) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // Consul's leaves name no host: VerifyConnection checks chain and SPIFFE ID
		VerifyConnection:   PeerOf(roots, service),
	}
}

// RootsFile reads a PEM file of roots into a pool, on every call: roots
// rotate.
func RootsFile(path string) func() (*x509.CertPool, error) {
	return func() (*x509.CertPool, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("workload: roots: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("workload: roots: no certificate in %s", path)
		}
		return pool, nil
	}
}
