package deploy

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/types"
	"github.com/nats-io/nats-server/v2/server"

	"github.com/meshop/meshop/localenv"
)

// How compose's Consul clients reach Consul (issue 11): over TLS, with
// the development CA from the volume consul-ca and their own token from
// their directory of the volume consul-tokens.
const (
	consulAddr      = "https://consul:8501"
	consulCACert    = "/consul/ca/consul-agent-ca.pem"
	consulTokenFile = "/consul/acl/token"
	caVolume        = "consul-ca"
	tokenVolume     = "consul-tokens"
	// connectCARoots is where consul-init copies the Connect CA's roots,
	// which Envoys check the control plane's certificate with.
	connectCARoots = "/consul/ca/connect-ca.pem"
)

// isOneShot says whether name runs once to completion: restart "no" and
// something waits for it to complete.
func isOneShot(p *types.Project, name string) bool {
	if p.Services[name].Restart != types.RestartPolicyNo {
		return false
	}
	for _, s := range p.Services {
		if d, ok := s.DependsOn[name]; ok && d.Condition == types.ServiceConditionCompletedSuccessfully {
			return true
		}
	}
	return false
}

// TestOneShotsAreAdopted: a one-shot is waited for by a long-running
// service (`up --wait` counts an exited container as a failure otherwise)
// and publishes nothing; consul-init is one, and everything that holds a
// Consul token waits for it.
func TestOneShotsAreAdopted(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	if !isOneShot(p, "consul-init") {
		t.Errorf("consul-init is not a one-shot (restart: \"no\", others wait for service_completed_successfully)")
	}
	for name, s := range p.Services {
		if s.Restart == types.RestartPolicyNo && !isOneShot(p, name) {
			t.Errorf("%s does not restart and nothing waits for it to complete", name)
		}
		if isOneShot(p, name) && len(s.Ports) > 0 {
			t.Errorf("one-shot %s publishes ports", name)
		}
		for dep, d := range s.DependsOn {
			if d.Condition == types.ServiceConditionCompletedSuccessfully && isOneShot(p, name) {
				t.Errorf("one-shot %s waits for one-shot %s; chain them in one script", name, dep)
			}
		}
		if _, mounted := tokenMount(s); mounted && name != "consul-init" {
			if d, ok := s.DependsOn["consul-init"]; !ok || d.Condition != types.ServiceConditionCompletedSuccessfully {
				t.Errorf("%s mounts its Consul token but does not wait for consul-init to complete", name)
			}
		}
	}
}

// tokenMount returns s's mount of the consul-tokens volume.
func tokenMount(s types.ServiceConfig) (types.ServiceVolumeConfig, bool) {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == tokenVolume {
			return v, true
		}
	}
	return types.ServiceVolumeConfig{}, false
}

// initConsumers are the consumers consul/compose/init.sh makes tokens for.
func initConsumers(t *testing.T) []string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "consul", "compose", "init.sh"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	if m := regexp.MustCompile(`(?m)^for svc in (.+); do\n  token "\$svc"`).FindSubmatch(raw); m != nil {
		out = strings.Fields(string(m[1]))
	}
	for _, m := range regexp.MustCompile(`(?m)^token ([a-z]+) `).FindAllSubmatch(raw, -1) {
		out = append(out, string(m[1]))
	}
	if len(out) == 0 {
		t.Fatal("consul/compose/init.sh: no `for svc in …; do token \"$svc\"` loop or `token <consumer>` line")
	}
	return out
}

// TestEachConsumerMountsOnlyItsOwnToken: consul-init writes the tokens;
// every other service that mounts the volume mounts only its own
// consumer's directory, read-only: an app and its sidecar their
// service's, the edge, the control plane and Prometheus their own.
func TestEachConsumerMountsOnlyItsOwnToken(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	consumers := initConsumers(t)
	want := map[string]string{"edge": "edge", "controlplane": "controlplane", "prometheus": "prometheus"}
	for _, a := range apps(t, p) {
		want[a.name] = a.service
		want[a.sidecar.Name] = a.service
	}
	for name, s := range p.Services {
		v, mounted := tokenMount(s)
		switch {
		case name == "consul-init":
			if !mounted || v.Volume != nil && v.Volume.Subpath != "" || v.ReadOnly {
				t.Errorf("consul-init must mount the whole %s volume read-write", tokenVolume)
			}
		case want[name] == "":
			if mounted {
				t.Errorf("%s mounts Consul tokens; it is no consumer", name)
			}
		case !mounted:
			t.Errorf("%s does not mount its Consul token (%s, subpath %s)", name, tokenVolume, want[name])
		case v.Volume == nil || v.Volume.Subpath != want[name] || !v.ReadOnly:
			t.Errorf("%s mounts %s %+v; want only subpath %s, read-only", name, tokenVolume, v.Volume, want[name])
		case !slices.Contains(consumers, want[name]):
			t.Errorf("%s mounts the token of %s, which consul/compose/init.sh does not make (it makes %v)", name, want[name], consumers)
		case v.Target != path.Dir(consulTokenFile):
			t.Errorf("%s mounts its token at %s, want %s", name, v.Target, path.Dir(consulTokenFile))
		}
	}
	for _, c := range consumers {
		if !slices.Contains(slices.Collect(maps.Values(want)), c) {
			t.Errorf("consul/compose/init.sh makes a token for %s, which no service mounts", c)
		}
	}
}

// mounted says whether s has the container path file in a volume mount of
// volume (read-only unless writable).
func mounted(s types.ServiceConfig, volume, file string) bool {
	for _, v := range s.Volumes {
		if v.Type == types.VolumeTypeVolume && v.Source == volume && strings.HasPrefix(file, v.Target+"/") {
			return true
		}
	}
	return false
}

// TestConsulClientsUseTLSAndTheirToken: every service that talks to
// Consul does so at https://consul:8501 with the development CA and its
// own token file; every Envoy renders its bootstrap with its token
// (envoy/entrypoint.sh) and has the Connect CA's roots its bootstrap
// names.
func TestConsulClientsUseTLSAndTheirToken(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	clients := 0
	for name, s := range p.Services {
		if addr := env(s, "CONSUL_HTTP_ADDR"); addr != "" {
			clients++
			if addr != consulAddr {
				t.Errorf("%s: CONSUL_HTTP_ADDR=%s, want %s (Consul's plain HTTP is on its loopback only)", name, addr, consulAddr)
			}
			if got := env(s, "CONSUL_CACERT"); got != consulCACert || !mounted(s, caVolume, got) {
				t.Errorf("%s: CONSUL_CACERT=%q, want %s in a mount of %s", name, got, consulCACert, caVolume)
			}
			if env(s, "CONSUL_HTTP_TOKEN") != "" {
				t.Errorf("%s: CONSUL_HTTP_TOKEN in the environment; use CONSUL_HTTP_TOKEN_FILE", name)
			}
		}
		if addr := env(s, "CONSUL_HTTP_ADDR"); addr != "" || isEnvoy(s) {
			if got := env(s, "CONSUL_HTTP_TOKEN_FILE"); got != consulTokenFile {
				t.Errorf("%s: CONSUL_HTTP_TOKEN_FILE=%q, want %s", name, got, consulTokenFile)
			}
		}
		if isEnvoy(s) {
			if got := []string(s.Entrypoint); !slices.Equal(got, []string{"sh", "/etc/meshop/envoy/entrypoint.sh"}) {
				t.Errorf("%s: entrypoint %v, want sh /etc/meshop/envoy/entrypoint.sh (it renders the bootstrap with the token)", name, got)
			} else if host := hostPath(t, s, got[1]); host != "envoy/entrypoint.sh" {
				t.Errorf("%s: %s is %q on the host, want envoy/entrypoint.sh", name, got[1], host)
			}
			if !mounted(s, caVolume, connectCARoots) {
				t.Errorf("%s: no mount of %s holds %s, the CA its bootstrap trusts", name, caVolume, connectCARoots)
			}
		}
	}
	if clients < len(appNames)+1 {
		t.Errorf("%d services talk to Consul; want at least every app and the control plane", clients)
	}
	if _, ok := p.Services["consul"].Environment["CONSUL_MANAGEMENT_TOKEN"]; !ok {
		t.Errorf("consul: no CONSUL_MANAGEMENT_TOKEN (the initial management token from .env)")
	}
}

// TestConsulIsPinned: every Consul image is the release the tool module
// pins (Makefile CONSUL_VERSION), the last under MPL-2.0.
func TestConsulIsPinned(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^CONSUL_VERSION := v(\S+)$`).FindSubmatch(raw)
	if m == nil {
		t.Fatal("Makefile has no CONSUL_VERSION := v…")
	}
	want := "hashicorp/consul:" + string(m[1])
	p := loadCompose(t, nil, allProfiles)
	n := 0
	for name, s := range p.Services {
		if strings.HasPrefix(s.Image, "hashicorp/consul:") {
			n++
			if s.Image != want {
				t.Errorf("%s: image %s, want %s", name, s.Image, want)
			}
		}
	}
	if n < 2 {
		t.Errorf("%d Consul images; want consul and consul-init", n)
	}
}

// TestConsulServerConfigIsValid runs `consul validate` on the compose
// server's configuration with what start.sh adds, and checks that its
// TLS files are where start.sh puts them.
func TestConsulServerConfigIsValid(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", "consul")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/consul is not built (make tools builds it; make test does it first)")
	}
	extra := filepath.Join(t.TempDir(), "start.hcl")
	if err := os.WriteFile(extra, []byte(`data_dir = "/consul/data"
acl { tokens { initial_management = "`+testSecrets["CONSUL_MANAGEMENT_TOKEN"]+`" } }`), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(root, "consul", "compose", "server.hcl")
	if out, err := exec.Command(bin, "validate", cfg, extra).CombinedOutput(); err != nil {
		t.Fatalf("consul validate %s: %v\n%s", cfg, err, out)
	}
	raw, err := os.ReadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{consulCACert, "/consul/tls/server.pem", "/consul/tls/server-key.pem"} {
		if !strings.Contains(string(raw), strconv.Quote(f)) {
			t.Errorf("server.hcl does not name %s, where start.sh puts it", f)
		}
	}
	p := loadCompose(t, nil, nil)
	c := p.Services["consul"]
	if !mounted(c, caVolume, consulCACert) || !mounted(c, "consul-tls", "/consul/tls/server.pem") {
		t.Errorf("consul mounts %v; want %s at /consul/ca and consul-tls at /consul/tls", c.Volumes, caVolume)
	}
	if host := hostPath(t, c, "/etc/meshop/consul/compose/server.hcl"); host != "consul/compose/server.hcl" {
		t.Errorf("consul: /etc/meshop/consul/compose/server.hcl is %q on the host", host)
	}
}

// TestComposeSecretsAreGenerated: scripts/compose-env.sh (make up) makes
// every secret docker-compose.yml requires, and the compose file and
// NATS's config take what it makes; a second run keeps them.
func TestComposeSecretsAreGenerated(t *testing.T) {
	root := repoRoot(t)
	compose, err := os.ReadFile(filepath.Join(root, "docker-compose.yml"))
	if err != nil {
		t.Fatal(err)
	}
	required := map[string]bool{}
	for _, m := range regexp.MustCompile(`\$\{([A-Z0-9_]+):\?`).FindAllSubmatch(compose, -1) {
		required[string(m[1])] = true
	}
	if got, want := slices.Sorted(maps.Keys(required)), slices.Sorted(maps.Keys(testSecrets)); !slices.Equal(got, want) {
		t.Errorf("docker-compose.yml requires %v; testSecrets has %v", got, want)
	}

	file := filepath.Join(t.TempDir(), ".env")
	generate := func() map[string]string {
		t.Helper()
		if out, err := exec.Command("sh", filepath.Join(root, "scripts", "compose-env.sh"), file).CombinedOutput(); err != nil {
			t.Fatalf("scripts/compose-env.sh: %v\n%s", err, out)
		}
		raw, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		secrets := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			secrets[k] = v
		}
		return secrets
	}
	secrets := generate()
	if again := generate(); !maps.Equal(secrets, again) {
		t.Errorf("a second run changed .env")
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf(".env mode %v, want 0600", fi.Mode().Perm())
	}
	for name := range required {
		if secrets[name] == "" {
			t.Errorf("scripts/compose-env.sh does not make %s", name)
		}
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(secrets["CONSUL_MANAGEMENT_TOKEN"]) {
		t.Errorf("CONSUL_MANAGEMENT_TOKEN %q is not a UUID", secrets["CONSUL_MANAGEMENT_TOKEN"])
	}
	p := loadCompose(t, secrets, allProfiles)
	for _, a := range apps(t, p) {
		if env(a.svc, "NATS_URL") == "" || env(a.svc, "DATABASE_URL") == "" {
			t.Errorf("%s: no NATS_URL or DATABASE_URL with the generated secrets", a.name)
		}
	}
	for _, user := range append([]string{localenv.NATSAdminUser}, localenv.NATSServices...) {
		t.Setenv(natsPasswordVar(user), secrets[natsPasswordVar(user)])
	}
	opts, err := server.ProcessConfigFile(filepath.Join(root, natsConfigFile))
	if err != nil {
		t.Fatalf("nats-server does not take %s with the generated passwords: %v", natsConfigFile, err)
	}
	for _, u := range opts.Users {
		if u.Password != secrets[natsPasswordVar(u.Username)] {
			t.Errorf("NATS user %s: password %q, want the generated %q", u.Username, u.Password, secrets[natsPasswordVar(u.Username)])
		}
	}
}

// configEntry is the part of a Consul config entry file the test reads.
type configEntry struct {
	Kind     string
	Name     string
	Protocol string
	Sources  []struct{ Name, Action string }
}

// spec is what a service's main.go declares to the mesh (app.Spec).
type spec struct{ upstreams, publicPrefixes []string }

// serviceSpecs reads Upstreams and PublicPrefixes from each service's
// app.Spec literal in services/<svc>/cmd/<svc>/main.go.
func serviceSpecs(t *testing.T) map[string]spec {
	t.Helper()
	out := map[string]spec{}
	for _, svc := range appNames {
		file := filepath.Join(repoRoot(t), "services", svc, "cmd", svc, "main.go")
		f, err := parser.ParseFile(token.NewFileSet(), file, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		found := false
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.CompositeLit)
			if sel, isSel := typeOf(lit); !ok || !isSel || sel != "app.Spec" {
				return true
			}
			found = true
			var s spec
			for _, elt := range lit.Elts {
				kv, ok := elt.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				list, _ := kv.Value.(*ast.CompositeLit)
				if key == nil || list == nil {
					continue
				}
				var values []string
				for _, v := range list.Elts {
					if bl, ok := v.(*ast.BasicLit); ok {
						value, _ := strconv.Unquote(bl.Value)
						values = append(values, value)
					}
				}
				switch key.Name {
				case "Upstreams":
					s.upstreams = values
				case "PublicPrefixes":
					s.publicPrefixes = values
				}
			}
			out[svc] = s
			return false
		})
		if !found {
			t.Fatalf("%s: no app.Spec{…} literal", file)
		}
	}
	return out
}

func typeOf(lit *ast.CompositeLit) (string, bool) {
	if lit == nil {
		return "", false
	}
	sel, ok := lit.Type.(*ast.SelectorExpr)
	if !ok {
		return "", false
	}
	x, ok := sel.X.(*ast.Ident)
	if !ok {
		return "", false
	}
	return x.Name + "." + sel.Sel.Name, true
}

// TestIntentionsFollowTheUpstreams: consul/config allows exactly the
// calls the services declare (a caller lists the destination in its
// Upstreams; the edge calls every service with public prefixes), denies
// everything else with a wildcard, and declares every service's protocol
// http (consulreg registers mesh_protocol=http: one port for HTTP/1.1 and
// gRPC; Consul accepts L7 intentions for http).
func TestIntentionsFollowTheUpstreams(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "consul", "config", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	defaults := map[string]string{}
	allowed := map[string][]string{}
	wildcard := false
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var e configEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		name := e.Name
		if name == "*" {
			name = "default-deny"
		}
		if want := e.Kind + "-" + name + ".json"; filepath.Base(f) != want {
			t.Errorf("%s holds %s %q; name it %s", f, e.Kind, e.Name, want)
		}
		switch e.Kind {
		case "service-defaults":
			defaults[e.Name] = e.Protocol
		case "service-intentions":
			for _, s := range e.Sources {
				switch {
				case e.Name == "*" && s.Name == "*" && s.Action == "deny":
					wildcard = true
				case s.Action == "allow" && e.Name != "*" && s.Name != "*":
					allowed[e.Name] = append(allowed[e.Name], s.Name)
				default:
					t.Errorf("%s: %s → %s %s: only exact allows and the one wildcard deny", f, s.Name, e.Name, s.Action)
				}
			}
		default:
			t.Errorf("%s: kind %s", f, e.Kind)
		}
	}
	if !wildcard {
		t.Errorf("no service-intentions entry denies * → *")
	}
	want := map[string][]string{}
	for svc, s := range serviceSpecs(t) {
		if defaults[svc] != "http" {
			t.Errorf("service-defaults %s: protocol %q, want http", svc, defaults[svc])
		}
		if len(s.publicPrefixes) > 0 {
			want[svc] = append(want[svc], "edge")
		}
		for _, up := range s.upstreams {
			want[up] = append(want[up], svc)
		}
	}
	for _, dest := range slices.Sorted(maps.Keys(want)) {
		got := slices.Sorted(slices.Values(allowed[dest]))
		if w := slices.Sorted(slices.Values(want[dest])); !slices.Equal(got, w) {
			t.Errorf("intentions to %s allow %v; the services' specs call for %v", dest, got, w)
		}
	}
	for dest := range allowed {
		if want[dest] == nil {
			t.Errorf("intentions allow calls to %s, which no service calls", dest)
		}
	}
}
