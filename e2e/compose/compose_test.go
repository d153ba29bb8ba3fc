//go:build e2e

package compose

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestCompose runs the whole mesh in Docker and checks it from outside.
func TestCompose(t *testing.T) {
	skip := func(reason string) {
		if os.Getenv("MESHOP_E2E_REQUIRE_DOCKER") != "" {
			t.Fatal("MESHOP_E2E_REQUIRE_DOCKER is set but " + reason)
		}
		t.Skip("skipped: " + reason)
	}
	if reason := dockerMissing(); reason != "" {
		skip("needs a Docker engine that can build and pull images; " + reason)
	}
	s := newStack(t)
	sec, reason := s.readSecrets()
	if reason != "" {
		skip(reason)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 25*time.Minute)
	defer cancel()

	t.Cleanup(func() {
		if t.Failed() {
			s.dumpLogs()
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer dcancel()
		if out, err := s.compose(dctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Errorf("docker compose down: %v\n%s", err, out)
		}
	})
	t.Logf("docker compose up (project %s); the first build takes a few minutes", s.project)
	if out, err := s.compose(ctx, "up", "-d", "--build", "--wait", "--wait-timeout", "900"); err != nil {
		t.Fatalf("docker compose up --wait: %v\n%s", err, tail(out, 60))
	}

	// The edge over HTTPS, trusting only the development certificate;
	// Consul over HTTPS, trusting only its development CA, with the
	// management token; the control plane's config dumps with that token
	// too (they need operator:read).
	edgeHTTP, err := tlsClient(sec.edgeCert, 10*time.Second)
	if err != nil {
		t.Fatalf("%s: %v", edgeCertFile, err)
	}
	api := &client{base: "https://" + s.addr(ctx, "edge", 8080), http: edgeHTTP}
	consulCA := s.copyOut(ctx, "consul", "/consul/ca/consul-agent-ca.pem")
	consulHTTP, err := tlsClient(consulCA, 5*time.Second)
	if err != nil {
		t.Fatalf("Consul's CA: %v", err)
	}
	withToken := map[string]string{"X-Consul-Token": sec.consulToken}
	consulAddr := s.addr(ctx, "consul", 8501)
	consul := &client{base: "https://" + consulAddr, http: consulHTTP, header: withToken}
	controlPlane := &client{base: "http://" + s.addr(ctx, "controlplane", 18080), http: &http.Client{Timeout: 5 * time.Second}, header: withToken}
	jaeger := "http://" + s.addr(ctx, "jaeger", 16686)

	// up --wait saw every container healthy; each order instance passes in
	// Consul once its checks through its sidecar's expose listener do, and
	// then the edge gets it as an endpoint.
	poll(ctx, t, 2*time.Minute, "order-1, order-2 and order-3 passing in Consul", func() (bool, string) {
		ids, err := passing(ctx, consul, "order")
		return err == nil && slices.Equal(ids, []string{"order-1", "order-2", "order-3"}), fmt.Sprintf("passing %v, err %v", ids, err)
	})
	poll(ctx, t, 2*time.Minute, "three order instances in the edge's endpoints", func() (bool, string) {
		eps, err := edgeEndpoints(ctx, controlPlane, "svc_order")
		return err == nil && len(eps) == 3, fmt.Sprintf("endpoints %v, err %v", eps, err)
	})

	var buyer session
	t.Run("purchase through the edge is traced end to end", func(t *testing.T) {
		buyer = purchase(ctx, t, api)
		checkTrace(ctx, t, jaeger, buyer.traceID)
	})
	if buyer.orderID == "" {
		t.Fatal("no order to run the other checks with")
	}
	t.Run("a forged-token request is rejected at the edge", func(t *testing.T) {
		forgedToken(ctx, t, api, buyer)
	})
	t.Run("an order instance dies under load", func(t *testing.T) {
		failover(ctx, t, s, api, controlPlane, buyer)
	})
	// Last: while order may not call payment, the edge may eject order
	// instances that answer 503.
	t.Run("a denied call is refused by the destination's sidecar", func(t *testing.T) {
		deniedCall(ctx, t, s, api, controlPlane, consulAPI(t, consulAddr, consulCA, sec.consulToken), buyer)
	})
}

// dockerMissing says why Docker cannot run the test, or "".
func dockerMissing() string {
	if _, err := exec.LookPath("docker"); err != nil {
		return "no docker CLI on PATH"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		return "no Docker engine answers (docker info: " + firstLine(out, err) + ")"
	}
	if out, err := exec.CommandContext(ctx, "docker", "compose", "version").CombinedOutput(); err != nil {
		return "no docker compose v2 (docker compose version: " + firstLine(out, err) + ")"
	}
	return ""
}

func firstLine(out []byte, err error) string {
	if line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); line != "" {
		return line
	}
	return err.Error()
}

// ---- the compose project ---------------------------------------------------

// stack is one compose project of the repository's compose file, with the
// e2e override (random loopback ports) and three order instances.
type stack struct {
	t       *testing.T
	root    string
	project string
}

func newStack(t *testing.T) *stack {
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			break
		}
		if parent := filepath.Dir(dir); parent != dir {
			dir = parent
			continue
		}
		t.Fatal("no go.work above the working directory")
	}
	return &stack{t: t, root: dir, project: "meshop-e2e-" + strconv.Itoa(os.Getpid())}
}

func (s *stack) compose(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"compose", "-p", s.project,
		"-f", "docker-compose.yml", "-f", "e2e/compose/compose.e2e.yml", "--profile", "order3"}, args...)
	cmd := exec.CommandContext(ctx, "docker", full...)
	cmd.Dir = s.root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// edgeCertFile is the edge's development certificate (make edge-cert).
const edgeCertFile = "deploy/tls/edge-https.crt"

// secrets are what the test reads from the repository's working tree.
type secrets struct {
	edgeCert    []byte // the edge's certificate, the only root the test trusts for it
	consulToken string // .env's CONSUL_MANAGEMENT_TOKEN
}

// readSecrets reads the edge's development certificate and Consul's
// management token, which make e2e makes before the test runs; reason
// says what is missing.
func (s *stack) readSecrets() (sec secrets, reason string) {
	cert, err := os.ReadFile(filepath.Join(s.root, edgeCertFile))
	if err != nil {
		return sec, "no edge certificate " + edgeCertFile + " (make e2e makes it: make edge-cert): " + err.Error()
	}
	token, err := envValue(filepath.Join(s.root, ".env"), "CONSUL_MANAGEMENT_TOKEN")
	if err != nil {
		return sec, "no Consul management token (make e2e writes .env): " + err.Error()
	}
	return secrets{edgeCert: cert, consulToken: token}, ""
}

// addr is the host:port where service's container port is published.
func (s *stack) addr(ctx context.Context, service string, port int) string {
	out, err := s.compose(ctx, "port", service, strconv.Itoa(port))
	if err != nil {
		s.t.Fatalf("docker compose port %s %d: %v\n%s", service, port, err, out)
	}
	addr := strings.TrimSpace(out)
	if _, _, err := net.SplitHostPort(addr); err != nil {
		s.t.Fatalf("docker compose port %s %d: %q", service, port, addr)
	}
	return addr
}

// copyOut reads a file of service's container (docker compose cp).
func (s *stack) copyOut(ctx context.Context, service, path string) []byte {
	dst := filepath.Join(s.t.TempDir(), filepath.Base(path))
	if out, err := s.compose(ctx, "cp", service+":"+path, dst); err != nil {
		s.t.Fatalf("docker compose cp %s:%s: %v\n%s", service, path, err, out)
	}
	raw, err := os.ReadFile(dst)
	if err != nil {
		s.t.Fatal(err)
	}
	return raw
}

// exec runs a command in service's running container.
func (s *stack) exec(ctx context.Context, service string, command ...string) (string, error) {
	return s.compose(ctx, append([]string{"exec", "-T", service}, command...)...)
}

// ip is the address of a service's container on the compose network.
func (s *stack) ip(ctx context.Context, service string) string {
	id, err := s.compose(ctx, "ps", "-q", service)
	if err != nil || strings.TrimSpace(id) == "" {
		s.t.Fatalf("docker compose ps -q %s: %v %q", service, err, id)
	}
	out, err := exec.CommandContext(ctx, "docker", "inspect", "-f",
		"{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", strings.TrimSpace(id)).CombinedOutput()
	if err != nil {
		s.t.Fatalf("docker inspect %s: %v\n%s", service, err, out)
	}
	fields := strings.Fields(string(out))
	if len(fields) != 1 {
		s.t.Fatalf("%s has addresses %q; want one network", service, fields)
	}
	return fields[0]
}

func (s *stack) dumpLogs() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if out, err := s.compose(ctx, "ps", "-a"); err == nil {
		s.t.Logf("docker compose ps -a:\n%s", out)
	}
	out, _ := s.compose(ctx, "logs", "--no-color", "--tail", "40")
	s.t.Logf("docker compose logs (last 40 lines per container):\n%s", out)
}

// session is what the purchase leaves for the other checks.
type session struct {
	token, orderID, traceID string
	productID               string // one in stock
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// product is the part of a product the test reads.
type product struct {
	ID    string `json:"id"`
	Stock int    `json:"stock"`
}

// purchase registers, logs in, picks a product and checks out with a
// card that succeeds, all through the edge (DESIGN §2).
func purchase(ctx context.Context, t *testing.T, api *client) session {
	email := "e2e-" + randomHex(6) + "@example.com"
	password := "correct horse battery " + randomHex(4)
	poll(ctx, t, time.Minute, "register "+email, func() (bool, string) {
		var reg struct {
			UserID string `json:"user_id"`
		}
		code, err := api.do(ctx, http.MethodPost, "/api/auth/register", nil,
			map[string]string{"email": email, "password": password, "name": "E2E Buyer"}, &reg)
		// 409: an earlier attempt got through but its answer was lost.
		return (code == http.StatusCreated && reg.UserID != "") || code == http.StatusConflict, fmt.Sprint(code, err)
	})
	var login struct {
		AccessToken string `json:"access_token"`
		TokenType   string `json:"token_type"`
	}
	if _, err := api.do(ctx, http.MethodPost, "/api/auth/login", nil,
		map[string]string{"email": email, "password": password}, &login); err != nil || login.AccessToken == "" {
		t.Fatalf("login: %v (%+v)", err, login)
	}
	bearer := map[string]string{"Authorization": "Bearer " + login.AccessToken}

	var products struct {
		Items []product `json:"items"`
	}
	if _, err := api.do(ctx, http.MethodGet, "/api/products?limit=50", nil, nil, &products); err != nil {
		t.Fatalf("products: %v", err)
	}
	i := slices.IndexFunc(products.Items, func(p product) bool { return p.Stock > 0 })
	if i < 0 {
		t.Fatalf("no product in stock among %d", len(products.Items))
	}

	// Our traceparent: the edge continues it, so the trace's id is known.
	traceID := randomHex(16)
	headers := map[string]string{
		"Authorization":   "Bearer " + login.AccessToken,
		"Idempotency-Key": "e2e-" + randomHex(8),
		"traceparent":     "00-" + traceID + "-" + randomHex(8) + "-01",
	}
	body := map[string]any{
		"items":   []map[string]any{{"product_id": products.Items[i].ID, "quantity": 1}},
		"payment": map[string]string{"card_token": "tok_visa"},
	}
	var order struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	code, err := api.do(ctx, http.MethodPost, "/api/orders", headers, body, &order)
	if code != http.StatusCreated || order.Status != "CONFIRMED" {
		t.Fatalf("checkout: %d %v, order %+v; want 201 CONFIRMED", code, err, order)
	}
	if _, err := api.do(ctx, http.MethodGet, "/api/orders/"+order.ID, bearer, nil, nil); err != nil {
		t.Fatalf("read the order back: %v", err)
	}
	return session{token: login.AccessToken, orderID: order.ID, traceID: traceID, productID: products.Items[i].ID}
}

// ---- traces ----------------------------------------------------------------

// checkTrace waits until Jaeger holds the checkout's trace with the spans
// of the edge, the order sidecar (inbound and egress), the upstream
// sidecars and the apps.
func checkTrace(ctx context.Context, t *testing.T, jaeger, traceID string) {
	want := []string{"edge", "order-sidecar", "order", "product-sidecar", "product", "payment-sidecar", "payment"}
	var last traceSummary
	poll(ctx, t, 90*time.Second, "trace "+traceID+" in Jaeger", func() (bool, string) {
		var err error
		last, err = fetchTrace(ctx, jaeger, traceID)
		if err != nil {
			return false, err.Error()
		}
		for _, svc := range want {
			if last.spans[svc] == 0 {
				return false, fmt.Sprintf("no span of %s yet; spans by service: %v", svc, last.spans)
			}
		}
		// The order sidecar forwards the edge's call in (local_app) and
		// order's calls out (svc_product, svc_payment).
		for _, c := range []string{"local_app", "svc_product", "svc_payment"} {
			if !last.clusters["order-sidecar"][c] {
				return false, fmt.Sprintf("no order-sidecar span to %s yet; clusters %v", c, last.clusters["order-sidecar"])
			}
		}
		return true, ""
	})
	t.Logf("trace %s: spans by service %v", traceID, last.spans)
}

// ---- failover --------------------------------------------------------------

// failover kills order-2 (app and sidecar) during a steady load of reads
// through the edge: no request may fail, and the dead instance must leave
// the edge's endpoints.
func failover(ctx context.Context, t *testing.T, s *stack, api, controlPlane *client, buyer session) {
	const (
		duration = 20 * time.Second
		rate     = 20 // requests per second
		killAt   = 5 * time.Second
	)
	dead := net.JoinHostPort(s.ip(ctx, "order-2-sidecar"), "15006")
	eps, err := edgeEndpoints(ctx, controlPlane, "svc_order")
	if err != nil || !slices.Contains(eps, dead) {
		t.Fatalf("order-2 (%s) is not among the edge's order endpoints %v (%v)", dead, eps, err)
	}

	var (
		mu       sync.Mutex
		failures []string
		sent     int
		wg       sync.WaitGroup
	)
	bearer := map[string]string{"Authorization": "Bearer " + buyer.token}
	tick := time.NewTicker(time.Second / rate)
	defer tick.Stop()
	start := time.Now()
	killed := make(chan error, 1)
	killing := false
	for time.Since(start) < duration {
		<-tick.C
		if !killing && time.Since(start) >= killAt {
			killing = true
			go func() {
				out, err := s.compose(ctx, "kill", "-s", "SIGKILL", "order-2", "order-2-sidecar")
				if err != nil {
					err = fmt.Errorf("%w: %s", err, out)
				}
				killed <- err
			}()
		}
		sent++
		wg.Add(1)
		go func(n int) {
			defer wg.Done()
			if _, err := api.do(ctx, http.MethodGet, "/api/orders/"+buyer.orderID, bearer, nil, nil); err != nil {
				mu.Lock()
				failures = append(failures, fmt.Sprintf("request %d at %s: %v", n, time.Since(start).Round(time.Millisecond), err))
				mu.Unlock()
			}
		}(sent)
	}
	wg.Wait()
	if !killing {
		t.Fatal("the load ended before order-2 was killed")
	}
	if err := <-killed; err != nil {
		t.Fatalf("kill order-2: %v", err)
	}
	if len(failures) > 0 {
		t.Errorf("%d of %d requests failed while order-2 died; first ones:\n%s",
			len(failures), sent, strings.Join(failures[:min(len(failures), 10)], "\n"))
	} else {
		t.Logf("%d requests at %d/s, order-2 killed after %s: none failed", sent, rate, killAt)
	}

	poll(ctx, t, time.Minute, "order-2 leaving the edge's endpoints", func() (bool, string) {
		eps, err := edgeEndpoints(ctx, controlPlane, "svc_order")
		return err == nil && !slices.Contains(eps, dead) && len(eps) == 2, fmt.Sprintf("endpoints %v, err %v", eps, err)
	})
}

// ---- helpers ---------------------------------------------------------------

// poll calls check until it reports done or the deadline passes; then it
// fails the test with check's last word.
func poll(ctx context.Context, t *testing.T, within time.Duration, what string, check func() (done bool, status string)) {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		done, status := check()
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("%s: not within %s: %s", what, within, status)
		case <-time.After(500 * time.Millisecond):
		}
	}
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
