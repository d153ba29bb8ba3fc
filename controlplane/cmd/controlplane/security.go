package main

import (
	"context"
	"crypto/tls"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/meshop/meshop/controlplane/csds"
	"github.com/meshop/meshop/controlplane/identity"
	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/controlplane/xdsauth"
	"github.com/meshop/meshop/services/kit/workload"
)

// xdsSecurity is how the ADS server is secured: TLS with the control
// plane's own certificate from Consul's Connect CA, and every stream
// authenticated with its node's Consul ACL token (xdsauth).
type xdsSecurity struct {
	options  []grpc.ServerOption
	auth     *xdsauth.Authenticator
	identity *workload.Watcher
	// leaves issue the Envoys' leaves (SDS secrets), fetched with their
	// nodes' tokens.
	leaves *identity.Leaves
}

// newXDSSecurity prepares the ADS server's security; run follows the
// control plane's identity and the Envoys' leaves, and must run before the
// server serves. setLeaf receives each new leaf of a service.
func newXDSSecurity(cfg config, log *slog.Logger, reg prometheus.Registerer, setLeaf func(serve.Leaf)) (*xdsSecurity, error) {
	client, err := api.NewClient(cfg.consul().Config())
	if err != nil {
		return nil, err
	}
	s := &xdsSecurity{
		// CSDS checks an operator's token itself (csds.Service).
		auth: xdsauth.New(xdsauth.Options{Directory: xdsauth.NewConsul(client), TTL: cfg.XDSTokenTTL, Logger: log, Metrics: reg, Exempt: []string{csds.ServiceName}}),
		leaves: identity.New(identity.Options{Client: client, Logger: log, Metrics: reg, OnLeaf: func(l *identity.Leaf) {
			setLeaf(serve.Leaf{Service: l.Service, CertPEM: l.CertPEM, KeyPEM: l.KeyPEM, Serial: l.SerialNumber})
		}}),
	}
	s.options = []grpc.ServerOption{grpc.StreamInterceptor(s.auth.StreamInterceptor())}
	if !cfg.XDSTLS {
		log.Warn("xDS served without TLS (XDS_TLS=false): tokens cross the network in clear")
		return s, nil
	}
	var cert atomic.Pointer[tls.Certificate]
	s.identity = workload.NewWatcher(client, workload.ControlPlane, log)
	reg.MustRegister(s.identity.ExpiryMetric())
	s.identity.OnChange = func(id *workload.Identity) {
		c, err := id.Certificate()
		if err != nil {
			log.Error("the control plane's new certificate does not parse; the previous one stays in force", "err", err)
			return
		}
		cert.Store(&c)
	}
	s.options = append(s.options, grpc.Creds(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS12,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return cert.Load(), nil
		},
	})))
	return s, nil
}

// ready waits for the control plane's first certificate, as long as it
// takes (Consul may be starting too), saying every 30 s what it waits for.
func (s *xdsSecurity) ready(ctx context.Context, log *slog.Logger) error {
	if s.identity == nil {
		return nil
	}
	for {
		wait, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := s.identity.Ready(wait)
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return nil // stopping
		}
		log.Warn("xDS waits for the control plane's certificate from Consul's Connect CA (does its token grant service:write on "+workload.ControlPlane+"?)", "err", err)
	}
}

// identities are the leaves' issuer when Envoys get secrets (MESH_MTLS),
// nil otherwise: no leaf is asked of Consul that nothing would use.
func (s *xdsSecurity) identities(cfg config) serve.Identities {
	if !cfg.Translate.MTLS {
		return nil
	}
	return s.leaves
}

// run follows the control plane's identity and issues the Envoys' leaves
// until ctx ends.
func (s *xdsSecurity) run(ctx context.Context) error {
	go s.leaves.Run(ctx)
	if s.identity == nil {
		<-ctx.Done()
		return nil
	}
	return ignoreCanceled(s.identity.Run(ctx))
}
