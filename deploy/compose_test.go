package deploy

import (
	"context"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/meshop/meshop/controlplane/translate"
)

// appNames are the six services (DESIGN §2), each deployed as an app and
// its sidecar.
var appNames = []string{"auth", "user", "product", "order", "payment", "notification"}

// scaleProfile holds the extra order instances.
const scaleProfile = "order3"

// e2eOverride is the Docker system test's override file.
const e2eOverride = "e2e/compose/compose.e2e.yml"

// loadCompose loads the compose files (relative to the repository root)
// the way `docker compose` does: schema validation, interpolation from env
// only (never from the test's environment), profiles, consistency checks.
// testSecrets stand for what make up writes to .env.
var testSecrets = map[string]string{
	"AUTH_KEY_ENCRYPTION_KEY":    "dGVzdC1vbmx5LWtleS1vZi0zMi1ieXRlcy0wMDAwMDA=",
	"POSTGRES_PASSWORD":          "test-superuser-secret",
	"AUTH_DB_PASSWORD":           "test-auth-secret",
	"USER_DB_PASSWORD":           "test-user-secret",
	"PRODUCT_DB_PASSWORD":        "test-product-secret",
	"ORDER_DB_PASSWORD":          "test-order-secret",
	"PAYMENT_DB_PASSWORD":        "test-payment-secret",
	"NOTIFICATION_DB_PASSWORD":   "test-notification-secret",
	"CONSUL_MANAGEMENT_TOKEN":    "00000000-0000-4000-8000-000000000001",
	"NATS_ADMIN_PASSWORD":        "test-nats-admin-secret",
	"AUTH_NATS_PASSWORD":         "test-nats-auth-secret",
	"USER_NATS_PASSWORD":         "test-nats-user-secret",
	"PRODUCT_NATS_PASSWORD":      "test-nats-product-secret",
	"ORDER_NATS_PASSWORD":        "test-nats-order-secret",
	"PAYMENT_NATS_PASSWORD":      "test-nats-payment-secret",
	"NOTIFICATION_NATS_PASSWORD": "test-nats-notification-secret",
}

func loadCompose(t *testing.T, env map[string]string, profiles []string, files ...string) *types.Project {
	t.Helper()
	root := repoRoot(t)
	if len(files) == 0 {
		files = []string{"docker-compose.yml"}
	}
	var paths []string
	for _, f := range files {
		paths = append(paths, filepath.Join(root, f))
	}
	ctx := context.Background()
	details, err := loader.LoadConfigFiles(ctx, paths, root)
	if err != nil {
		t.Fatal(err)
	}
	withSecrets := maps.Clone(testSecrets)
	maps.Copy(withSecrets, env)
	details.Environment = types.Mapping(withSecrets)
	p, err := loader.LoadWithContext(ctx, *details, loader.WithProfiles(profiles))
	if err != nil {
		t.Fatalf("compose files %v do not load: %v", files, err)
	}
	return p
}

// allProfiles loads every service, whatever its profile.
var allProfiles = []string{"*"}

// app is one app service and its sidecar, as the compose file pairs them.
type app struct {
	name    string // compose service of the app, e.g. order-2
	service string // Consul service name, e.g. order
	svc     types.ServiceConfig
	sidecar types.ServiceConfig
}

// apps returns the app services of p (those with MESH_MODE) and their
// sidecars; it fails the test if an app's network namespace is not a
// sidecar's.
func apps(t *testing.T, p *types.Project) []app {
	t.Helper()
	var out []app
	for _, name := range slices.Sorted(maps.Keys(p.Services)) {
		s := p.Services[name]
		if _, ok := s.Environment["MESH_MODE"]; !ok {
			continue
		}
		a := app{name: name, svc: s}
		if s.Build != nil && s.Build.Args["SERVICE"] != nil {
			a.service = *s.Build.Args["SERVICE"]
		}
		sc, ok := strings.CutPrefix(s.NetworkMode, "service:")
		if !ok {
			t.Errorf("%s: network_mode %q; an app must join its sidecar's network namespace (service:<sidecar>)", name, s.NetworkMode)
			continue
		}
		a.sidecar, ok = p.Services[sc]
		if !ok {
			t.Errorf("%s: network_mode names %s, which is not a service", name, sc)
			continue
		}
		out = append(out, a)
	}
	return out
}

func env(s types.ServiceConfig, key string) string {
	if v := s.Environment[key]; v != nil {
		return *v
	}
	return ""
}

// flag returns the value after name in an Envoy command line.
func flag(cmd []string, name string) string {
	if i := slices.Index(cmd, name); i >= 0 && i+1 < len(cmd) {
		return cmd[i+1]
	}
	return ""
}

func isEnvoy(s types.ServiceConfig) bool { return strings.HasPrefix(s.Image, "envoyproxy/envoy:") }

func TestComposeLoads(t *testing.T) {
	tests := []struct {
		name     string
		env      map[string]string
		profiles []string
		files    []string
	}{
		{"default", nil, nil, nil},
		{"state of the world xDS", map[string]string{"MESH_XDS": "sotw"}, nil, nil},
		{"three order instances", nil, []string{scaleProfile}, nil},
		{"e2e override", nil, []string{scaleProfile}, []string{"docker-compose.yml", e2eOverride}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			loadCompose(t, tt.env, tt.profiles, tt.files...)
		})
	}
}

func TestEveryAppSitsBehindItsOwnSidecar(t *testing.T) {
	cp := translate.DefaultConfig()
	p := loadCompose(t, nil, allProfiles)
	ids := map[string]string{}
	sidecars := map[string]string{}
	for _, a := range apps(t, p) {
		t.Run(a.name, func(t *testing.T) {
			if !slices.Contains(appNames, a.service) {
				t.Fatalf("build arg SERVICE %q is not one of %v", a.service, appNames)
			}
			if !isEnvoy(a.sidecar) {
				t.Errorf("%s shares the network namespace of %s, which is not an Envoy (image %q)", a.name, a.sidecar.Name, a.sidecar.Image)
			}
			if other, dup := sidecars[a.sidecar.Name]; dup {
				t.Errorf("%s and %s share sidecar %s; each instance needs its own", a.name, other, a.sidecar.Name)
			}
			sidecars[a.sidecar.Name] = a.name

			// Identity: the sidecar's node id is the app's Consul ID, its
			// node cluster the service name (DESIGN §6).
			id := env(a.svc, "INSTANCE_ID")
			if !strings.HasPrefix(id, a.service+"-") {
				t.Errorf("INSTANCE_ID %q: want %s-<suffix>", id, a.service)
			}
			if other, dup := ids[id]; dup {
				t.Errorf("INSTANCE_ID %q is also %s's", id, other)
			}
			ids[id] = a.name
			cmd := []string(a.sidecar.Command)
			if got := flag(cmd, "--service-node"); got != id {
				t.Errorf("sidecar %s: --service-node %q, want the app's INSTANCE_ID %q", a.sidecar.Name, got, id)
			}
			if got := flag(cmd, "--service-cluster"); got != a.service {
				t.Errorf("sidecar %s: --service-cluster %q, want %q", a.sidecar.Name, got, a.service)
			}
			if got := flag(cmd, "-c"); !strings.Contains(got, "/sidecar-") {
				t.Errorf("sidecar %s: -c %q, want a sidecar bootstrap", a.sidecar.Name, got)
			}

			// Nothing bypasses the sidecar: the app listens on loopback,
			// and nothing of the shared namespace is published.
			host, port, err := net.SplitHostPort(env(a.svc, "HTTP_ADDR"))
			if err != nil || host != "127.0.0.1" || port != "8080" {
				t.Errorf("HTTP_ADDR %q: the app must bind 127.0.0.1:8080 only", env(a.svc, "HTTP_ADDR"))
			}
			for _, s := range []types.ServiceConfig{a.svc, a.sidecar} {
				if len(s.Ports) > 0 || len(s.Expose) > 0 {
					t.Errorf("%s publishes or exposes ports %v %v; the mesh is reached through the edge only", s.Name, s.Ports, s.Expose)
				}
			}

			// Registration: at the sidecar's inbound listener; calls out
			// through its egress listener.
			want := map[string]string{
				"MESH_MODE":                   "sidecar",
				"ADVERTISE_ADDR":              a.sidecar.Name,
				"ADVERTISE_PORT":              strconv.Itoa(int(cp.InboundPort)),
				"MESH_EGRESS_URL":             "http://127.0.0.1:" + strconv.Itoa(int(cp.OutboundPort)),
				"CONSUL_HTTP_ADDR":            consulAddr,
				"CONSUL_CACERT":               consulCACert,
				"CONSUL_HTTP_TOKEN_FILE":      consulTokenFile,
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4317",
			}
			for k, v := range want {
				if got := env(a.svc, k); got != v {
					t.Errorf("%s=%q, want %q", k, got, v)
				}
			}

			// Graceful stop: drain and deregister before Docker kills it.
			if g := a.svc.StopGracePeriod; g == nil || time.Duration(*g) <= 10*time.Second {
				t.Errorf("stop_grace_period %v: the app needs more than its 10s drain to deregister", g)
			}

			// The app restarts with its sidecar (it would be left in a
			// dead network namespace otherwise).
			dep, ok := a.svc.DependsOn[a.sidecar.Name]
			if !ok || !dep.Restart {
				t.Errorf("%s must depend on %s with restart: true", a.name, a.sidecar.Name)
			}
		})
	}
	for _, name := range appNames {
		found := slices.ContainsFunc(apps(t, p), func(a app) bool { return a.service == name })
		if !found {
			t.Errorf("no app service runs %s", name)
		}
	}
	// Every Envoy that is not a sidecar of an app is the edge.
	for name, s := range p.Services {
		if !isEnvoy(s) || sidecars[name] != "" {
			continue
		}
		cmd := []string(s.Command)
		if !translate.IsEdge(flag(cmd, "--service-cluster")) || !regexp.MustCompile(`^edge-[0-9]+$`).MatchString(flag(cmd, "--service-node")) {
			t.Errorf("Envoy %s is no app's sidecar and not an edge (--service-node edge-<n> --service-cluster edge): %v", name, cmd)
		}
	}
}

// TestSidecarHealthMeansListeners: a sidecar is healthy once the control
// plane gave it its inbound listener (where callers reach the app) and
// its expose listener (where Consul's checks and Prometheus reach it, as
// they have no mesh certificate), both asked of its admin API.
func TestSidecarHealthMeansListeners(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	for _, a := range apps(t, p) {
		hc := a.sidecar.HealthCheck
		if hc == nil {
			t.Errorf("%s: no health check", a.sidecar.Name)
			continue
		}
		test := strings.Join(hc.Test, " ")
		for _, want := range []string{"/dev/tcp/127.0.0.1/15000", "GET /listeners", "'^inbound::'", "'^expose::'"} {
			if !strings.Contains(test, want) {
				t.Errorf("%s: health check %q lacks %s", a.sidecar.Name, test, want)
			}
		}
	}
}

// TestEnvoysDrainAtOnce: every Envoy closes the connections of a listener
// the control plane replaced after their next request (and all of them
// within a bounded time), so a changed intention applies to the callers'
// pooled connections too, not over Envoy's default 600 s gradual drain.
func TestEnvoysDrainAtOnce(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		if !isEnvoy(s) {
			continue
		}
		cmd := []string(s.Command)
		if got := flag(cmd, "--drain-strategy"); got != "immediate" {
			t.Errorf("%s: --drain-strategy %q, want immediate", name, got)
		}
		if secs, err := strconv.Atoi(flag(cmd, "--drain-time-s")); err != nil || secs <= 0 || secs > 60 {
			t.Errorf("%s: --drain-time-s %q, want at most 60", name, flag(cmd, "--drain-time-s"))
		}
	}
}

func TestOrderScalesToThreeInstances(t *testing.T) {
	count := func(p *types.Project) (n int) {
		for _, a := range apps(t, p) {
			if a.service == "order" {
				n++
			}
		}
		return n
	}
	if n := count(loadCompose(t, nil, nil)); n != 1 {
		t.Errorf("default: %d order instances, want 1", n)
	}
	if n := count(loadCompose(t, nil, []string{scaleProfile})); n != 3 {
		t.Errorf("profile %s: %d order instances, want 3", scaleProfile, n)
	}
}

func TestXDSFlavourIsSelectable(t *testing.T) {
	root := repoRoot(t)
	for flavour, env := range map[string]map[string]string{"delta": nil, "sotw": {"MESH_XDS": "sotw"}} {
		p := loadCompose(t, env, allProfiles)
		for name, s := range p.Services {
			if !isEnvoy(s) {
				continue
			}
			cfg := flag([]string(s.Command), "-c")
			if !strings.HasSuffix(cfg, "-"+flavour+".yaml") {
				t.Errorf("%s: %s: -c %q, want the %s bootstrap", flavour, name, cfg, flavour)
			}
			if host := hostPath(t, s, cfg); host == "" {
				t.Errorf("%s: %s: %s is not in a bind mount", flavour, name, cfg)
			} else if _, err := os.Stat(filepath.Join(root, host)); err != nil {
				t.Errorf("%s: %s: bootstrap %s: %v", flavour, name, host, err)
			}
		}
	}
}

// hostPath maps a container path to the repository path bind-mounted
// there, or "".
func hostPath(t *testing.T, s types.ServiceConfig, container string) string {
	root := repoRoot(t)
	for _, v := range s.Volumes {
		if v.Type != types.VolumeTypeBind {
			continue
		}
		if rest, ok := strings.CutPrefix(container, v.Target); ok && (rest == "" || rest[0] == '/') {
			rel, err := filepath.Rel(root, v.Source)
			if err != nil {
				return ""
			}
			return filepath.Join(rel, rest)
		}
	}
	return ""
}

func TestImagesArePinned(t *testing.T) {
	version := regexp.MustCompile(`[0-9]`)
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		ref := s.Image
		if ref == "" {
			t.Errorf("%s: no image", name)
			continue
		}
		_, tag, hasTag := strings.Cut(ref[strings.LastIndex(ref, "/")+1:], ":")
		switch {
		case strings.Contains(ref, "@sha256:"):
			// a digest pins it
		case !hasTag || tag == "latest":
			t.Errorf("%s: image %q is not pinned (no tag, or latest)", name, ref)
		case s.Build == nil && !version.MatchString(tag):
			t.Errorf("%s: image %q: tag %q names no version", name, ref, tag)
		case s.Build != nil && s.PullPolicy != types.PullPolicyBuild:
			t.Errorf("%s: built image %q must have pull_policy: build (nothing to pull from a registry)", name, ref)
		}
	}
}

func TestEveryServiceHasAHealthCheck(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		if isOneShot(p, name) {
			continue
		}
		hc := s.HealthCheck
		switch {
		case hc == nil || hc.Disable || len(hc.Test) == 0 || hc.Test[0] == "NONE":
			t.Errorf("%s: no health check; `docker compose up --wait` could not tell when it is up", name)
		case hc.Interval == nil || hc.Timeout == nil || hc.Retries == nil || hc.StartPeriod == nil:
			t.Errorf("%s: health check without interval, timeout, retries and start_period", name)
		}
		if s.Restart != types.RestartPolicyUnlessStopped {
			t.Errorf("%s: restart %q, want unless-stopped (every service is long-running)", name, s.Restart)
		}
	}
}

func TestDependsOnConditions(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	conditions := []string{types.ServiceConditionHealthy, types.ServiceConditionStarted, types.ServiceConditionCompletedSuccessfully}
	for name, s := range p.Services {
		for dep, d := range s.DependsOn {
			if !slices.Contains(conditions, d.Condition) {
				t.Errorf("%s depends on %s with condition %q", name, dep, d.Condition)
			}
			if d.Condition == types.ServiceConditionHealthy && p.Services[dep].HealthCheck == nil {
				t.Errorf("%s waits for %s to be healthy, which has no health check", name, dep)
			}
		}
	}
	healthy := func(from string, deps ...string) {
		for _, dep := range deps {
			if d, ok := p.Services[from].DependsOn[dep]; !ok || d.Condition != types.ServiceConditionHealthy {
				t.Errorf("%s must wait for %s to be healthy", from, dep)
			}
		}
	}
	for _, a := range apps(t, p) {
		healthy(a.name, "consul", "postgres", "nats")
	}
	healthy("controlplane", "consul")
	healthy("consul-init", "consul")
	// `up --wait` returns when the edge is healthy, and the edge is healthy
	// when the public API answers through it.
	if hc := strings.Join(p.Services["edge"].HealthCheck.Test, " "); !strings.Contains(hc, "/api/") {
		t.Errorf("edge health check %q does not call the API", hc)
	}
}

// published lists who may publish what, and on which host address ("" =
// every interface). Anything else is private to the compose network.
var published = map[string]map[uint32]string{
	"edge":         {8080: ""},
	"consul":       {8501: "127.0.0.1"},
	"jaeger":       {16686: "127.0.0.1"},
	"controlplane": {18080: "127.0.0.1"},
	"prometheus":   {9090: "127.0.0.1"},
	"grafana":      {3000: "127.0.0.1"},
}

func TestPublishedPorts(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		for _, port := range s.Ports {
			hostIP, ok := published[name][port.Target]
			switch {
			case !ok:
				t.Errorf("%s publishes %d; only %v may publish", name, port.Target, published)
			case port.HostIP != hostIP:
				t.Errorf("%s publishes %d on %q, want %q", name, port.Target, port.HostIP, hostIP)
			case port.Published != strconv.Itoa(int(port.Target)):
				t.Errorf("%s publishes %d as host port %q, want the same number (DESIGN §7)", name, port.Target, port.Published)
			}
		}
	}
	for name, ports := range published {
		for target := range ports {
			if !slices.ContainsFunc(p.Services[name].Ports, func(pc types.ServicePortConfig) bool { return pc.Target == target }) {
				t.Errorf("%s does not publish %d", name, target)
			}
		}
	}
}

func TestE2EOverridePublishesNoFixedPort(t *testing.T) {
	p := loadCompose(t, nil, []string{scaleProfile}, "docker-compose.yml", e2eOverride)
	for name, s := range p.Services {
		for _, port := range s.Ports {
			if port.Published != "" || port.HostIP != "127.0.0.1" {
				t.Errorf("%s: %d published as %s:%s; the system test needs a random loopback port", name, port.Target, port.HostIP, port.Published)
			}
		}
	}
	for name := range published {
		if len(p.Services[name].Ports) != len(published[name]) {
			t.Errorf("%s: the override publishes %d ports, the base %d", name, len(p.Services[name].Ports), len(published[name]))
		}
	}
}

// TestEachServiceHasItsOwnDatabase: one role and database per service,
// the role's password a generated secret from .env (never the role's
// name), given alike to the service's DATABASE_URL and to the init
// script that creates the role.
func TestEachServiceHasItsOwnDatabase(t *testing.T) {
	root := repoRoot(t)
	p := loadCompose(t, nil, allProfiles)
	script, err := os.ReadFile(filepath.Join(root, "postgres", "init", "01-meshop.sh"))
	if err != nil {
		t.Fatal(err)
	}
	if host := hostPath(t, p.Services["postgres"], "/docker-entrypoint-initdb.d"); host != filepath.Join("postgres", "init") {
		t.Errorf("postgres mounts %q at /docker-entrypoint-initdb.d, want postgres/init", host)
	}
	for _, stmt := range []string{`CREATE ROLE :"role" LOGIN PASSWORD :'password';`, `CREATE DATABASE :"role" OWNER :"role";`, `REVOKE ALL ON DATABASE :"role" FROM PUBLIC;`} {
		if !strings.Contains(string(script), stmt) {
			t.Errorf("postgres/init/01-meshop.sh lacks %s", stmt)
		}
	}
	roles := regexp.MustCompile(`(?m)^for service in (.+); do$`).FindStringSubmatch(string(script))
	if roles == nil {
		t.Fatal("postgres/init/01-meshop.sh has no `for service in …; do` line")
	}
	for _, a := range apps(t, p) {
		u, err := url.Parse(env(a.svc, "DATABASE_URL"))
		if err != nil || u.Scheme != "postgres" || u.Host != "postgres:5432" {
			t.Errorf("%s: DATABASE_URL %q, want postgres://…@postgres:5432/…", a.name, env(a.svc, "DATABASE_URL"))
			continue
		}
		if u.User.Username() != a.service || strings.TrimPrefix(u.Path, "/") != a.service {
			t.Errorf("%s: DATABASE_URL uses role %q and database %q, want %q for both", a.name, u.User.Username(), u.Path, a.service)
		}
		secret := strings.ToUpper(a.service) + "_DB_PASSWORD"
		if pw, _ := u.User.Password(); pw != testSecrets[secret] {
			t.Errorf("%s: DATABASE_URL password is %q, want ${%s} from .env", a.name, pw, secret)
		}
		if got := env(p.Services["postgres"], secret); got != testSecrets[secret] {
			t.Errorf("postgres: %s = %q, want ${%s} for the init script", secret, got, secret)
		}
		if !slices.Contains(strings.Fields(roles[1]), a.service) {
			t.Errorf("%s: postgres/init/01-meshop.sh does not create role %s (for service in %s)", a.name, a.service, roles[1])
		}
	}
	// Without the secrets (no .env), compose refuses to start.
	details, err := loader.LoadConfigFiles(context.Background(), []string{filepath.Join(root, "docker-compose.yml")}, root)
	if err != nil {
		t.Fatal(err)
	}
	details.Environment = types.Mapping{}
	if _, err := loader.LoadWithContext(context.Background(), *details); err == nil || !strings.Contains(err.Error(), ".env, which make up writes") {
		t.Errorf("compose without .env loaded (%v); want the missing secret named", err)
	}
}

func TestBindMountsExist(t *testing.T) {
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		for _, v := range s.Volumes {
			if v.Type != types.VolumeTypeBind {
				continue
			}
			if _, err := os.Stat(v.Source); err != nil {
				t.Errorf("%s mounts %s: %v", name, v.Source, err)
			}
			if !v.ReadOnly {
				t.Errorf("%s mounts %s read-write; configuration is mounted read-only", name, v.Source)
			}
		}
	}
}

func TestBuildsUseTheWorkspaceDockerfile(t *testing.T) {
	root := repoRoot(t)
	p := loadCompose(t, nil, allProfiles)
	for name, s := range p.Services {
		if s.Build == nil {
			continue
		}
		if s.Build.Context != root || filepath.Base(s.Build.Dockerfile) != "Dockerfile" {
			t.Errorf("%s builds %s with %s; want the repository root (the Go workspace) and its Dockerfile", name, s.Build.Context, s.Build.Dockerfile)
		}
		svc := ""
		if v := s.Build.Args["SERVICE"]; v != nil {
			svc = *v
		}
		pkg := "./services/" + svc + "/cmd/" + svc
		if v := s.Build.Args["PKG"]; v != nil {
			pkg = *v
		}
		if _, err := os.Stat(filepath.Join(root, pkg, "main.go")); err != nil {
			t.Errorf("%s builds %s: %v", name, pkg, err)
		}
	}
}
