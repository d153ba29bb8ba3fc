package deploy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/localenv"
)

// TestConsulComposeScripts runs compose's Consul scripts outside Docker,
// against bin/consul: consul/compose/start.sh (TLS material, the server
// with server.hcl and the management token) and consul/compose/init.sh
// (policies, tokens, Connect CA roots, config entries), with the
// containers' paths moved into a temporary directory and free ports.
// It checks what the containers rely on: HTTPS with the development CA,
// anonymous requests denied, each token doing its consumer's job and no
// more, the intentions in force, and a second run of init.sh keeping
// every secret. The images have sh, curl and jq; so must this machine.
func TestConsulComposeScripts(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/consul is not built (make tools builds it; make test does it first)")
	}
	for _, tool := range []string{"sh", "curl", "jq"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("no %s on PATH (the Consul image has it; this test runs the scripts here)", tool)
		}
	}
	dir := t.TempDir()
	for _, d := range []string{"bin", "ca", "tls", "tokens", "data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(bin, filepath.Join(dir, "bin", "consul")); err != nil {
		t.Fatal(err)
	}
	ports, err := localenv.FreePorts(4)
	if err != nil {
		t.Fatal(err)
	}
	https, http_, server, serf := ports[0], ports[1], ports[2], ports[3]
	addr := "https://127.0.0.1:" + strconv.Itoa(https)

	// The containers' paths, and what only Docker has: the image's
	// entrypoint (which runs the agent as the consul user) and that user.
	// (strings.Replacer tries its pairs in order: the specific ones first.)
	moved := func(script string, extra ...string) string {
		raw, err := os.ReadFile(filepath.Join(root, "consul", "compose", script))
		if err != nil {
			t.Fatal(err)
		}
		r := strings.NewReplacer(append(extra,
			"/etc/meshop/consul/compose/server.hcl", filepath.Join(dir, "server.hcl"),
			"/consul/ca", filepath.Join(dir, "ca"),
			"/consul/tls", filepath.Join(dir, "tls"),
			"/consul/tokens", filepath.Join(dir, "tokens"),
			"/etc/meshop/consul", filepath.Join(root, "consul"),
		)...)
		out := filepath.Join(dir, script)
		if err := os.WriteFile(out, []byte(r.Replace(string(raw))), 0o755); err != nil {
			t.Fatal(err)
		}
		return out
	}
	moved("server.hcl")
	start := moved("start.sh",
		`chown consul:consul`, `true`,
		`exec docker-entrypoint.sh agent`, fmt.Sprintf(`exec consul agent -data-dir=%s -bind=127.0.0.1 -hcl='performance { raft_multiplier = 1 }' -hcl='ports { https = %d, http = %d, server = %d, serf_lan = %d, serf_wan = -1 }'`,
			filepath.Join(dir, "data"), https, http_, server, serf))
	initScript := moved("init.sh")
	containerPath := regexp.MustCompile(`(?m)^[^#]*?(^|[^A-Za-z0-9_.-])/consul/`)
	for _, s := range []string{filepath.Join(dir, "server.hcl"), start, initScript} {
		if raw, _ := os.ReadFile(s); containerPath.Match(raw) {
			t.Fatalf("%s still names a container path under /consul/: extend the test's replacements", filepath.Base(s))
		}
	}
	management := testSecrets["CONSUL_MANAGEMENT_TOKEN"]
	environ := append(os.Environ(),
		"PATH="+filepath.Join(dir, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"),
		"CONSUL_MANAGEMENT_TOKEN="+management,
		"CONSUL_HTTP_ADDR="+addr)

	agent := exec.Command("sh", start)
	agent.Env = environ
	logFile, err := os.Create(filepath.Join(dir, "consul.log"))
	if err != nil {
		t.Fatal(err)
	}
	agent.Stdout, agent.Stderr = logFile, logFile
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- agent.Wait() }()
	t.Cleanup(func() {
		agent.Process.Kill()
		<-exited
		if t.Failed() {
			log, _ := os.ReadFile(logFile.Name())
			t.Logf("consul log:\n%s", log)
		}
	})

	ca, err := os.ReadFile(filepath.Join(dir, "ca", "consul-agent-ca.pem"))
	for deadline := time.Now().Add(30 * time.Second); err != nil && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		ca, err = os.ReadFile(filepath.Join(dir, "ca", "consul-agent-ca.pem"))
	}
	if err != nil {
		t.Fatalf("start.sh made no CA: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "tls", "server-key.pem")); err != nil {
		t.Fatalf("start.sh made no server key: %v", err)
	}
	if keys, _ := filepath.Glob(filepath.Join(dir, "*", "*ca-key.pem")); len(keys) > 0 {
		t.Errorf("the CA's key was kept: %v", keys)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatal("consul-agent-ca.pem holds no certificate")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	call := func(token, method, path, body string) (int, string) {
		t.Helper()
		req, err := http.NewRequestWithContext(context.Background(), method, addr+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("X-Consul-Token", token)
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		code, _ := call(management, http.MethodGet, "/v1/acl/token/self", "")
		if code == http.StatusOK {
			break
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("consul exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("consul over TLS with the management token: %d after 60s", code)
		}
	}

	runInit := func() string {
		t.Helper()
		cmd := exec.Command("sh", initScript)
		cmd.Env = environ
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("init.sh: %v\n%s", err, out)
		}
		return string(out)
	}
	runInit()
	tokens := map[string]string{}
	for _, c := range initConsumers(t) {
		file := filepath.Join(dir, "tokens", c, "token")
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("init.sh made no token for %s: %v", c, err)
		}
		if fi, _ := os.Stat(file); fi.Mode().Perm() != 0o444 {
			t.Errorf("%s's token file has mode %v, want 0444 (read by Envoy's and the apps' users; only its consumer mounts it)", c, fi.Mode().Perm())
		}
		tokens[c] = strings.TrimSpace(string(b))
	}
	roots, err := os.ReadFile(filepath.Join(dir, "ca", "connect-ca.pem"))
	if err != nil || !strings.Contains(string(roots), "BEGIN CERTIFICATE") {
		t.Errorf("init.sh wrote no Connect CA roots (%v)", err)
	}

	register := func(name string) string { return `{"Name":"` + name + `","ID":"` + name + `-t","Port":20000}` }
	tests := []struct {
		name, token, method, path, body string
		want                            int
	}{
		{"anonymous reads the catalog", "", http.MethodGet, "/v1/catalog/services", "", http.StatusOK}, // answers, filtered to nothing: checked below
		{"anonymous registers", "", http.MethodPut, "/v1/agent/service/register", register("order"), http.StatusForbidden},
		{"order registers order", tokens["order"], http.MethodPut, "/v1/agent/service/register", register("order"), http.StatusOK},
		{"order registers payment", tokens["order"], http.MethodPut, "/v1/agent/service/register", register("payment"), http.StatusForbidden},
		{"edge registers order", tokens["edge"], http.MethodPut, "/v1/agent/service/register", register("order"), http.StatusForbidden},
		{"order writes a policy", tokens["order"], http.MethodPut, "/v1/kv/mesh/policy/order", "{}", http.StatusForbidden},
		{"control plane reads policies", tokens["controlplane"], http.MethodGet, "/v1/kv/mesh/policy/?recurse", "", http.StatusNotFound},
		{"control plane writes its state", tokens["controlplane"], http.MethodPut, "/v1/kv/mesh/state/leader", "x", http.StatusOK},
		{"control plane writes a policy", tokens["controlplane"], http.MethodPut, "/v1/kv/mesh/policy/order", "{}", http.StatusForbidden},
		{"control plane reads intentions", tokens["controlplane"], http.MethodGet, "/v1/config/service-intentions", "", http.StatusOK},
		{"prometheus reads the catalog", tokens["prometheus"], http.MethodGet, "/v1/health/service/order", "", http.StatusOK},
		{"prometheus reads the KV store", tokens["prometheus"], http.MethodGet, "/v1/kv/mesh/state/leader", "", http.StatusForbidden},
	}
	for _, tt := range tests {
		if got, body := call(tt.token, tt.method, tt.path, tt.body); got != tt.want {
			t.Errorf("%s: %s %s = %d (%s), want %d", tt.name, tt.method, tt.path, got, strings.TrimSpace(body), tt.want)
		}
	}
	if _, body := call("", http.MethodGet, "/v1/catalog/services", ""); strings.Contains(body, "order") {
		t.Errorf("anonymous sees the catalog: %s", body)
	}
	for pair, want := range map[string]string{"source=order&destination=payment": `"Allowed":true`, "source=notification&destination=payment": `"Allowed":false`} {
		if _, body := call(management, http.MethodGet, "/v1/connect/intentions/check?"+pair, ""); !strings.Contains(body, want) {
			t.Errorf("intentions/check?%s = %s, want %s", pair, body, want)
		}
	}

	// Again, as at every `up`: every token keeps its secret.
	runInit()
	for c, secret := range tokens {
		b, _ := os.ReadFile(filepath.Join(dir, "tokens", c, "token"))
		if strings.TrimSpace(string(b)) != secret {
			t.Errorf("a second init.sh changed %s's token", c)
		}
	}
	// A token file holding the management token is refused, not rewritten.
	orderFile := filepath.Join(dir, "tokens", "order", "token")
	os.Chmod(orderFile, 0o644)
	if err := os.WriteFile(orderFile, []byte(management+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", initScript)
	cmd.Env = environ
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "management token") {
		t.Errorf("init.sh with the management token in a token file: %v\n%s", err, out)
	}
	if code, _ := call(management, http.MethodGet, "/v1/acl/tokens", ""); code != http.StatusOK {
		t.Errorf("the management token no longer manages: %d", code)
	}
}
