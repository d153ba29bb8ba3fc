package compose

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// These run in `make test` (no tag): they check that the system test reads
// the control plane's config dump, Consul's health and Jaeger's traces
// right, from answers shaped like the real ones (testdata), and that its
// own tools (the forged token, the TLS client, .env and Envoy stats
// readers) do what the checks rely on.

// serveFile serves file at path to requests carrying the header
// X-Consul-Token: token (token "": any request).
func serveFile(t *testing.T, path, file, token string) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if token != "" && r.Header.Get("X-Consul-Token") != token {
			http.Error(w, `{"error":{"code":"forbidden","message":"operator:read needed"}}`, http.StatusForbidden)
			return
		}
		if r.URL.Path != path {
			http.Error(w, `{"errors":[{"code":404,"msg":"trace not found"}]}`, http.StatusNotFound)
			return
		}
		http.ServeFile(w, r, file)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

const testToken = "00000000-0000-4000-8000-000000000001"

func withToken(base, token string) *client {
	return &client{base: base, http: &http.Client{Timeout: 5 * time.Second}, header: map[string]string{"X-Consul-Token": token}}
}

func TestEdgeEndpoints(t *testing.T) {
	base := serveFile(t, "/debug/config_dump", "testdata/config_dump.json", testToken)
	tests := []struct {
		cluster string
		want    []string
	}{
		{"svc_order", []string{"172.18.0.12:15006", "172.18.0.14:15006", "172.18.0.9:15006"}},
		{"svc_product", []string{"172.18.0.10:15006"}},
		{"svc_nothing", nil},
	}
	for _, tt := range tests {
		got, err := edgeEndpoints(context.Background(), withToken(base, testToken), tt.cluster)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("edgeEndpoints(%s) = %v, %v; want %v", tt.cluster, got, err, tt.want)
		}
	}
	if _, err := edgeEndpoints(context.Background(), withToken(base, "another"), "svc_order"); err == nil || !strings.Contains(err.Error(), "403") {
		t.Errorf("a refused token: %v, want the 403", err)
	}
}

func TestFetchTrace(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	base := serveFile(t, "/api/traces/"+id, "testdata/trace.json", "")
	got, err := fetchTrace(context.Background(), base, id)
	if err != nil {
		t.Fatal(err)
	}
	if got.spans["edge"] != 1 || got.spans["order-sidecar"] != 2 || got.spans["order"] != 1 {
		t.Errorf("spans by service %v", got.spans)
	}
	for _, c := range []string{"local_app", "svc_product"} {
		if !got.clusters["order-sidecar"][c] {
			t.Errorf("order-sidecar clusters %v lack %s", got.clusters["order-sidecar"], c)
		}
	}
	if _, err := fetchTrace(context.Background(), base, "0000"); err == nil {
		t.Error("a missing trace is no error")
	}
}

func TestPassing(t *testing.T) {
	base := serveFile(t, "/v1/health/service/order", "testdata/health_order.json", testToken)
	got, err := passing(context.Background(), withToken(base, testToken), "order")
	if want := []string{"order-1", "order-2", "order-3"}; err != nil || !slices.Equal(got, want) {
		t.Errorf("passing = %v, %v; want %v", got, err, want)
	}
}

func TestJSONError(t *testing.T) {
	jsonHeader := http.Header{"Content-Type": {"application/json"}}
	tests := []struct {
		name     string
		resp     response
		wantCode string // "": an error
	}{
		{"the edge's 401", response{401, jsonHeader, []byte(`{"error":{"code":"invalid_token","message":"Jwt verification fails","details":{"status":"401"}}}`)}, "invalid_token"},
		{"plain text", response{401, http.Header{"Content-Type": {"text/plain"}}, []byte(`Jwt is missing`)}, ""},
		{"JSON without a code", response{401, jsonHeader, []byte(`{"message":"no"}`)}, ""},
	}
	for _, tt := range tests {
		got, err := jsonError(tt.resp)
		if (tt.wantCode == "") != (err != nil) || got.Error.Code != tt.wantCode {
			t.Errorf("%s: jsonError = %+v, %v; want code %q", tt.name, got, err, tt.wantCode)
		}
	}
}

func TestTLSClientTrustsOnlyItsCertificate(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	get := func(caPEM []byte) error {
		c, err := tlsClient(caPEM, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := c.Get(srv.URL)
		if err == nil {
			resp.Body.Close()
		}
		return err
	}
	if err := get(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})); err != nil {
		t.Errorf("the trusted server: %v", err)
	}
	if err := get(selfSigned(t)); err == nil {
		t.Error("a server with another certificate was trusted")
	}
	if _, err := tlsClient([]byte("not PEM"), time.Second); err == nil {
		t.Error("no certificate to trust is no error")
	}
}

// selfSigned is a PEM certificate for 127.0.0.1 that signed nothing else.
func selfSigned(t *testing.T) []byte {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "elsewhere"},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestEnvValue(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".env")
	content := "# secrets\nPOSTGRES_PASSWORD=abc\nCONSUL_MANAGEMENT_TOKEN=" + testToken + "\nQUOTED=\"x y\"\nEMPTY=\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	for key, want := range map[string]string{"CONSUL_MANAGEMENT_TOKEN": testToken, "QUOTED": "x y", "EMPTY": "", "MISSING": ""} {
		got, err := envValue(path, key)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("envValue(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
}

// TestForgeToken: the forged token is a well-formed ES256 JWT with auth's
// claims and the key id asked for, whose signature holds for our key
// only: at the edge, only the key is wrong.
func TestForgeToken(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	token, key, err := forgeToken("auth-key-1", now)
	if err != nil {
		t.Fatal(err)
	}
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		t.Fatalf("token %q has %d parts", token, len(parts))
	}
	decode := func(i int, out any) []byte {
		raw, err := base64.RawURLEncoding.DecodeString(parts[i])
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		if out != nil {
			if err := json.Unmarshal(raw, out); err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
		}
		return raw
	}
	var header map[string]string
	decode(0, &header)
	if header["alg"] != "ES256" || header["kid"] != "auth-key-1" || header["typ"] != "JWT" {
		t.Errorf("header %v", header)
	}
	var claims struct {
		Iss  string   `json:"iss"`
		Aud  []string `json:"aud"`
		Role string   `json:"role"`
		Exp  int64    `json:"exp"`
	}
	decode(1, &claims)
	if claims.Iss != "meshop-auth" || !slices.Equal(claims.Aud, []string{"meshop"}) || claims.Exp <= now.Unix() || claims.Role != "admin" {
		t.Errorf("claims %+v", claims)
	}
	sig := decode(2, nil)
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if len(sig) != 64 || !ecdsa.Verify(key, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Error("the signature does not hold for the forging key")
	}
}

func TestEnvoyStat(t *testing.T) {
	stats := "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nhttp.inbound.rbac.allowed: 12\nhttp.inbound.rbac.denied: 3\nhttp.inbound.rbac.shadow_denied: 0\n"
	if n, ok := envoyStat(stats, "http.inbound.rbac.denied"); !ok || n != 3 {
		t.Errorf("denied = %d, %v; want 3", n, ok)
	}
	if _, ok := envoyStat(stats, "http.outbound.rbac.denied"); ok {
		t.Error("a counter Envoy does not have was found")
	}
}
