package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/deploy/envoybootstrap"
)

// bootstrapCase is one bootstrap file and what it must say.
type bootstrapCase struct {
	file      string
	apiType   corev3.ApiConfigSource_ApiType
	adminPort uint32
	sidecar   bool
}

var bootstrapCases = []bootstrapCase{
	{"sidecar-delta.yaml", corev3.ApiConfigSource_DELTA_GRPC, 15000, true},
	{"sidecar-sotw.yaml", corev3.ApiConfigSource_GRPC, 15000, true},
	{"edge-delta.yaml", corev3.ApiConfigSource_DELTA_GRPC, 9901, false},
	{"edge-sotw.yaml", corev3.ApiConfigSource_GRPC, 9901, false},
}

// envoyMetricsPort is every Envoy's read-only metrics listener (Istio's
// number), which Prometheus scrapes instead of the admin API.
const envoyMetricsPort = envoybootstrap.MetricsPort

// sampleToken stands for a node's Consul ACL token (a UUID).
const sampleToken = "6f1c9a52-3e0b-4d7a-9b8e-2c5d4e6f7a81"

// renderBootstrap renders a bootstrap template the way envoy/entrypoint.sh
// does in the container: envoy/render-bootstrap.sh with a token file.
func renderBootstrap(t *testing.T, template, token string) ([]byte, error) {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "render-bootstrap.sh"), template)
	cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, &renderError{err, stderr.String()}
	}
	return out, nil
}

type renderError struct {
	err    error
	stderr string
}

func (e *renderError) Error() string { return e.err.Error() + ": " + e.stderr }

// loadBootstrap renders a bootstrap template with sampleToken and parses
// it strictly (envoybootstrap.Parse: every field known, the proto's own
// validation rules including Any fields, no deprecated fields).
func loadBootstrap(t *testing.T, path string) *bootstrapv3.Bootstrap {
	t.Helper()
	raw, err := renderBootstrap(t, path, sampleToken)
	if err != nil {
		t.Fatalf("render %s: %v", path, err)
	}
	b, err := envoybootstrap.Parse(raw)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func TestEveryBootstrapIsTested(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "envoy", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !slices.ContainsFunc(bootstrapCases, func(c bootstrapCase) bool { return c.file == filepath.Base(f) }) {
			t.Errorf("envoy/%s has no case in bootstrapCases", filepath.Base(f))
		}
	}
}

func TestBootstraps(t *testing.T) {
	for _, tc := range bootstrapCases {
		t.Run(tc.file, func(t *testing.T) {
			b := loadBootstrap(t, filepath.Join(repoRoot(t), "envoy", tc.file))
			want := envoybootstrap.Want{APIType: tc.apiType, AdminPort: tc.adminPort, Sidecar: tc.sidecar, Token: sampleToken}
			for _, problem := range envoybootstrap.Check(b, want) {
				t.Error(problem)
			}
		})
	}
}

// TestBootstrapTemplatesNeedAToken: render-bootstrap.sh refuses a token
// file that does not hold a Consul token (so nothing but a UUID lands in
// the YAML), and every template has the placeholder.
func TestBootstrapTemplatesNeedAToken(t *testing.T) {
	for _, tc := range bootstrapCases {
		path := filepath.Join(repoRoot(t), "envoy", tc.file)
		for _, bad := range []string{"", "not-a-token", sampleToken + `"` + "\n" + "admin: {}", sampleToken + "\n" + sampleToken, strings.ToUpper(sampleToken)} {
			if _, err := renderBootstrap(t, path, bad); err == nil {
				t.Errorf("%s rendered with token %q", tc.file, bad)
			}
		}
	}
	if _, err := renderBootstrap(t, filepath.Join(repoRoot(t), "observability", "prometheus", "prometheus.yml"), sampleToken); err == nil {
		t.Errorf("a file without @CONSUL_TOKEN@ rendered")
	}
}

// TestEntrypointStartsEnvoyWithTheRenderedBootstrap runs envoy/entrypoint.sh
// with a stand-in envoy on PATH: it gets every argument unchanged except
// -c, which names the rendered copy (owner-only) of the template.
func TestEntrypointStartsEnvoyWithTheRenderedBootstrap(t *testing.T) {
	dir := t.TempDir()
	fake := filepath.Join(dir, "envoy")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\nprintf '%s\\n' \"$@\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat("/docker-entrypoint.sh"); err == nil {
		t.Skip("/docker-entrypoint.sh exists here: entrypoint.sh would hand over to it")
	}
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(sampleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	template := filepath.Join(repoRoot(t), "envoy", "sidecar-delta.yaml")
	cmd := exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "entrypoint.sh"),
		"--service-node", "order-1", "-c", template, "--service-cluster", "order")
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "TMPDIR="+dir, "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("entrypoint.sh: %v\n%s", err, out)
	}
	rendered := filepath.Join(dir, "envoy-bootstrap.yaml")
	if got, want := strings.Fields(string(out)), []string{"--service-node", "order-1", "-c", rendered, "--service-cluster", "order"}; !slices.Equal(got, want) {
		t.Errorf("envoy ran with %v, want %v", got, want)
	}
	got, err := os.ReadFile(rendered)
	if err != nil {
		t.Fatal(err)
	}
	want, err := renderBootstrap(t, template, sampleToken)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("the bootstrap Envoy got is not the rendered template")
	}
	if fi, err := os.Stat(rendered); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("rendered bootstrap mode %v, want 0600 (it holds the token)", fi.Mode().Perm())
	}
	cmd = exec.Command("sh", filepath.Join(repoRoot(t), "envoy", "entrypoint.sh"), "--service-node", "order-1")
	cmd.Env = cmd.Env[:0]
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "TMPDIR="+dir, "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("entrypoint.sh without -c started envoy: %s", out)
	}
}

// TestDeltaAndSotwDifferOnlyInAPIType keeps each pair from drifting apart.
func TestDeltaAndSotwDifferOnlyInAPIType(t *testing.T) {
	for _, role := range []string{"sidecar", "edge"} {
		t.Run(role, func(t *testing.T) {
			dir := filepath.Join(repoRoot(t), "envoy")
			delta := loadBootstrap(t, filepath.Join(dir, role+"-delta.yaml"))
			sotw := loadBootstrap(t, filepath.Join(dir, role+"-sotw.yaml"))
			sotw.GetDynamicResources().GetAdsConfig().ApiType = delta.GetDynamicResources().GetAdsConfig().GetApiType()
			if !proto.Equal(delta, sotw) {
				t.Errorf("%s-delta.yaml and %s-sotw.yaml differ in more than ads_config.api_type", role, role)
			}
		})
	}
}

func TestEdgeClusterNameMatchesTheControlPlane(t *testing.T) {
	// compose passes --service-cluster edge; the control plane recognises
	// the edge by that name (one shared snapshot).
	if !translate.IsEdge("edge") {
		t.Fatal(`the control plane no longer treats node cluster "edge" as the edge; update docker-compose.yml and envoy/`)
	}
}
