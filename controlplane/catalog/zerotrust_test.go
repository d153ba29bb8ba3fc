package catalog_test

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/localenv"
)

// TestWatcherFollowsIntentionsAndCA reads with the control plane's own
// token (consul/acl/controlplane.hcl): the service-intentions entries
// appear, change and go, and the CA's trust domain is the host of the URI
// SAN of a real leaf certificate.
func TestWatcherFollowsIntentionsAndCA(t *testing.T) {
	agent, consul := consultest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	token, err := consul.ControlPlaneToken(ctx)
	if err != nil {
		t.Fatal(err)
	}
	agent.Register(consultest.Instance{Service: "payment", ID: "payment-1", Port: 20001, AppPort: "8080"})
	agent.PutIntentions("payment", &api.SourceIntention{Name: "order", Action: api.IntentionActionAllow})

	src, err := catalog.NewConsulSource(catalog.Connection{Address: consul.HTTPAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	w := startWatcher(t, src, &localenv.LogBuffer{})
	sources := func() string {
		s := latest(w)
		if s == nil {
			return "no snapshot"
		}
		raw, ok := s.Intentions.Get("payment")
		if !ok {
			return "none"
		}
		var e api.ServiceIntentionsConfigEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return err.Error()
		}
		var out []string
		for _, src := range e.Sources {
			out = append(out, src.Name+"="+string(src.Action))
		}
		return strings.Join(out, ",")
	}
	consultest.Eventually(t, 10*time.Second, func() (bool, string) { return sources() == "order=allow", sources() })

	ca := latest(w).CA
	if !strings.HasSuffix(ca.TrustDomain, ".consul") || len(ca.RootPEMs) == 0 {
		t.Fatalf("CA = %+v, want a trust domain <cluster id>.consul and roots", ca)
	}
	leaf, _, err := agent.Client.Agent().ConnectCALeaf("payment", nil)
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("spiffe://%s/ns/default/dc/dc1/svc/payment", ca.TrustDomain)
	if leaf.ServiceURI != want {
		t.Errorf("leaf ServiceURI = %q, want %q", leaf.ServiceURI, want)
	}
	block, _ := pem.Decode([]byte(leaf.CertPEM))
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(cert.URIs) != 1 || cert.URIs[0].String() != want {
		t.Errorf("leaf URI SANs = %v, want [%s]", cert.URIs, want)
	}
	roots := x509.NewCertPool()
	for _, p := range ca.RootPEMs {
		roots.AppendCertsFromPEM([]byte(p))
	}
	if _, err := cert.Verify(x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("the leaf does not verify against the snapshot's roots: %v", err)
	}

	agent.PutIntentions("payment",
		&api.SourceIntention{Name: "order", Action: api.IntentionActionAllow},
		&api.SourceIntention{Name: "*", Action: api.IntentionActionDeny})
	consultest.Eventually(t, 5*time.Second, func() (bool, string) { return sources() == "order=allow,*=deny", sources() })
	agent.DeleteIntentions("payment")
	consultest.Eventually(t, 5*time.Second, func() (bool, string) { return sources() == "none", sources() })
}
