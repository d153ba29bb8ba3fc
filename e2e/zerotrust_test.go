package e2e

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/services/kit/workload"
)

// TestZeroTrust checks identity and authorization through the real data
// plane: the proxyless apps' gRPC servers, configured by the control plane
// with mTLS (Consul's Connect CA) and RBAC (Consul's intentions), and the
// apps' own clients through a root rotation.
func TestZeroTrust(t *testing.T) {
	ctx := context.Background()
	sys := startSystem(t, func(plan *system.Plan) {
		if plan.Envoy != "" {
			t.Skip("sidecar mode: the Envoy flavour is checked by goldens and make e2e")
		}
	})
	consul, err := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr(), Token: sys.Consul.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	roots := func() (*x509.CertPool, error) { return consulRoots(consul) }
	// callAs calls svc's gRPC health service on its gRPC port presenting
	// cert (nil: none), checking svc's own identity.
	callAs := func(svc string, cert *tls.Certificate) error {
		conf := workload.ClientTLS(roots, svc)
		if cert != nil {
			conf.Certificates = []tls.Certificate{*cert}
		}
		addr := "127.0.0.1:" + strconv.Itoa(sys.Plan.GRPC[svc])
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(conf)))
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err = healthpb.NewHealthClient(cc).Check(cctx, &healthpb.HealthCheckRequest{})
		return err
	}
	checkAs := func(cert *tls.Certificate) error { return callAs("payment", cert) }
	order, notification := leafOf(t, sys, "order"), leafOf(t, sys, "notification")

	t.Run("order's certificate reaches payment", func(t *testing.T) {
		if err := checkAs(order); err != nil {
			t.Fatalf("order → payment: %v", err)
		}
	})
	t.Run("notification's certificate is denied by payment's RBAC", func(t *testing.T) {
		if err := checkAs(notification); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("notification → payment: got %v, want PermissionDenied", err)
		}
		metrics := text(t, sys.Instance("payment").URL()+"/metrics")
		for _, want := range []string{
			`meshop_grpc_server_mesh_denied_total{grpc_method="/grpc.health.v1.Health/Check"} 1`,
			`meshop_workload_certificate_expiry_seconds{service="payment"}`,
		} {
			if !strings.Contains(metrics, want) {
				t.Errorf("payment's /metrics has no %s", want)
			}
		}
	})
	t.Run("no certificate, or one of another trust domain, cannot connect", func(t *testing.T) {
		foreign := foreignLeaf(t, "order")
		for _, svc := range system.Services {
			if err := callAs(svc, nil); err == nil || status.Code(err) == codes.PermissionDenied {
				t.Errorf("%s without a certificate: got %v, want a failed handshake", svc, err)
			}
			if err := callAs(svc, &foreign); err == nil || status.Code(err) == codes.PermissionDenied {
				t.Errorf("%s with another trust domain's certificate of order: got %v, want a failed handshake", svc, err)
			}
		}
	})
	t.Run("an intention removed denies within seconds, restored allows again", func(t *testing.T) {
		entry, _, err := consul.ConfigEntries().Get(api.ServiceIntentions, "payment", nil)
		if err != nil {
			t.Fatal(err)
		}
		kept := *entry.(*api.ServiceIntentionsConfigEntry)
		without := kept
		without.Sources = slices.DeleteFunc(slices.Clone(kept.Sources), func(s *api.SourceIntention) bool { return s.Name == "order" })
		if len(without.Sources) == len(kept.Sources) {
			t.Fatalf("payment's intentions have no order source: %+v", kept.Sources)
		}
		if _, _, err := consul.ConfigEntries().Set(&without, nil); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		eventually(t, 10*time.Second, func() (bool, string) {
			err := checkAs(order)
			return status.Code(err) == codes.PermissionDenied, fmt.Sprintf("order → payment without the intention: %v", err)
		})
		t.Logf("denied %s after the intention was removed", time.Since(start).Round(time.Millisecond))
		restored := kept
		restored.ModifyIndex = 0
		if _, _, err := consul.ConfigEntries().Set(&restored, nil); err != nil {
			t.Fatal(err)
		}
		eventually(t, 10*time.Second, func() (bool, string) {
			err := checkAs(order)
			return err == nil, fmt.Sprintf("order → payment with the intention back: %v", err)
		})
	})
	t.Run("a root rotation reaches every app and calls keep succeeding", func(t *testing.T) {
		rotateRoot(t, sys, consul)
	})
}

// rotateRoot forces a new root through Consul's CA configuration and
// checks every app's certificate file is reissued under it while
// checkouts, which cross the mesh to user, product and payment, keep
// succeeding.
func rotateRoot(t *testing.T, sys *system.System, consul *api.Client) {
	bearer := customer(t, sys, "rotation@example.com")
	buy := func(n int) (int, map[string]any) { return checkout(sys, bearer, "rotation-"+strconv.Itoa(n)) }
	if code, body := buy(0); code != http.StatusCreated {
		t.Fatalf("checkout before the rotation: %d %v", code, body)
	}

	before, _, err := consul.Connect().CARoots(nil)
	if err != nil {
		t.Fatal(err)
	}
	conf, _, err := consul.Connect().CAGetConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	conf.Config["PrivateKeyType"], conf.Config["PrivateKeyBits"] = "ec", 384 // a new key: a new root
	if _, err := consul.Connect().CASetConfig(conf, nil); err != nil {
		t.Fatal(err)
	}
	var newRoot *x509.Certificate
	eventually(t, 10*time.Second, func() (bool, string) {
		after, _, err := consul.Connect().CARoots(nil)
		if err != nil || after.ActiveRootID == before.ActiveRootID {
			return false, fmt.Sprintf("active root still %s (%v)", before.ActiveRootID, err)
		}
		for _, r := range after.Roots {
			if r.Active {
				newRoot = parsePEM(t, r.RootCertPEM)
			}
		}
		return newRoot != nil, "no active root"
	})

	// Every app's leaf is reissued under the new root (Consul's agents
	// wait up to 30 s of jitter), while checkouts keep succeeding.
	deadline, n := time.Now().Add(90*time.Second), 0
	for {
		n++
		if code, body := buy(n); code != http.StatusCreated {
			t.Errorf("checkout %d during the rotation: %d %v", n, code, body)
		}
		var stale []string
		for _, svc := range system.Services {
			data, err := os.ReadFile(filepath.Join(sys.Dir, "instances", sys.Instance(svc).ID, "cert.pem"))
			if err != nil || !bytes.Equal(parsePEM(t, string(data)).AuthorityKeyId, newRoot.SubjectKeyId) {
				stale = append(stale, svc)
			}
		}
		if len(stale) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 90 s these apps still hold a leaf of the old root: %v", stale)
		}
		time.Sleep(time.Second)
	}
	t.Logf("every app holds a leaf of the new root; %d checkouts succeeded meanwhile", n)
	// gRPC's file_watcher rereads the files every 2 s: once payment
	// presents its new leaf, calls carry the new leaves, and still succeed.
	order := leafOf(t, sys, "order")
	eventually(t, 10*time.Second, func() (bool, string) {
		served := servedLeaf(sys, "payment", order)
		return served != nil && bytes.Equal(served.AuthorityKeyId, newRoot.SubjectKeyId), "payment still presents a leaf of the old root"
	})
	if code, body := buy(n + 1); code != http.StatusCreated {
		t.Errorf("checkout after the rotation: %d %v", code, body)
	}
}

// servedLeaf is the leaf svc's gRPC port presents to a client holding
// cert (nil when the handshake fails).
func servedLeaf(sys *system.System, svc string, cert *tls.Certificate) *x509.Certificate {
	conn, err := tls.Dial("tcp", "127.0.0.1:"+strconv.Itoa(sys.Plan.GRPC[svc]), &tls.Config{
		InsecureSkipVerify: true, // only reading what is presented
		Certificates:       []tls.Certificate{*cert}, NextProtos: []string{"h2"},
	})
	if err != nil {
		return nil
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// customer registers and logs in a customer; the answer is the
// Authorization header value.
func customer(t *testing.T, sys *system.System, email string) string {
	t.Helper()
	call[map[string]any](t, "POST", sys.Instance("auth").URL()+"/auth/register", nil,
		`{"email":"`+email+`","password":"correct horse battery","name":"Rotation"}`, http.StatusCreated)
	login := call[map[string]any](t, "POST", sys.Instance("auth").URL()+"/auth/login", nil,
		`{"email":"`+email+`","password":"correct horse battery"}`, http.StatusOK)
	return "Bearer " + login["access_token"].(string)
}

// leafOf is a leaf certificate of svc from Consul's Connect CA, fetched
// with a token of svc's service identity, as the app itself does.
func leafOf(t *testing.T, sys *system.System, svc string) *tls.Certificate {
	t.Helper()
	token, err := sys.Consul.ServiceToken(context.Background(), svc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := api.NewClient(&api.Config{Address: sys.Consul.HTTPAddr(), Token: token})
	if err != nil {
		t.Fatal(err)
	}
	leaf, _, err := c.Agent().ConnectCALeaf(svc, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair([]byte(leaf.CertPEM), []byte(leaf.PrivateKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	return &cert
}

// foreignLeaf is a certificate of svc's SPIFFE ID in another trust
// domain, from a CA of its own.
func foreignLeaf(t *testing.T, svc string) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "other CA"}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, &key.PublicKey, key)
	caCert, _ := x509.ParseCertificate(caDER)
	uri, _ := url.Parse("spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/" + svc)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: svc}, URIs: []*url.URL{uri},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, caCert, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key}
}

// consulRoots are the Connect CA's roots.
func consulRoots(c *api.Client) (*x509.CertPool, error) {
	roots, _, err := c.Connect().CARoots(nil)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots.Roots {
		pool.AppendCertsFromPEM([]byte(r.RootCertPEM))
	}
	return pool, nil
}

// parsePEM parses the first certificate of a PEM text.
func parsePEM(t *testing.T, text string) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		t.Fatalf("no PEM block in %q", text)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// text is the body of a GET of url, which must answer 200.
func text(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s = %d %s", url, resp.StatusCode, b.String())
	}
	return b.String()
}
