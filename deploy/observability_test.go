package deploy

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/controlplane/serve"
	"github.com/meshop/meshop/services/kit/instrument"
)

// TestJaegerComposeConfig validates the compose Jaeger configuration with
// the Jaeger that `make tools` builds from the same release as the image.
func TestJaegerComposeConfig(t *testing.T) {
	root := repoRoot(t)
	bin := filepath.Join(root, "bin", "jaeger")
	if _, err := os.Stat(bin); err != nil {
		t.Skip("bin/jaeger is not built (make tools builds it; make test does it first)")
	}
	cfg := filepath.Join(root, "observability", "jaeger", "config-compose.yaml")
	if out, err := exec.Command(bin, "validate", "--config", cfg).CombinedOutput(); err != nil {
		t.Fatalf("jaeger validate %s: %v\n%s", cfg, err, out)
	}
	p := loadCompose(t, nil, nil)
	if host := hostPath(t, p.Services["jaeger"], "/etc/jaeger/config.yaml"); host != "observability/jaeger/config-compose.yaml" {
		t.Errorf("jaeger mounts %q as its configuration", host)
	}
}

// sidecarExposePort is every sidecar's plaintext expose listener (Istio's
// 15021): GET /health, /ready and /metrics only, forwarded to the app.
// Consul's checks and Prometheus's scrapes of the apps go there, since
// the inbound listener takes mesh client certificates only (MESH_MTLS).
const sidecarExposePort = 15021

// prometheusConfig is the part of prometheus.yml the test reads.
type prometheusConfig struct {
	ScrapeConfigs []struct {
		JobName       string `json:"job_name"`
		MetricsPath   string `json:"metrics_path"`
		StaticConfigs []struct {
			Targets []string `json:"targets"`
		} `json:"static_configs"`
		ConsulSDConfigs []struct {
			Server    string   `json:"server"`
			Scheme    string   `json:"scheme"`
			Services  []string `json:"services"`
			TLSConfig struct {
				CAFile string `json:"ca_file"`
			} `json:"tls_config"`
			Authorization struct {
				Type            string `json:"type"`
				CredentialsFile string `json:"credentials_file"`
			} `json:"authorization"`
		} `json:"consul_sd_configs"`
		RelabelConfigs []struct {
			SourceLabels []string `json:"source_labels"`
			TargetLabel  string   `json:"target_label"`
			Replacement  string   `json:"replacement"`
		} `json:"relabel_configs"`
	} `json:"scrape_configs"`
}

func TestPrometheusScrapesEveryPart(t *testing.T) {
	root := repoRoot(t)
	path := filepath.Join(root, "observability", "prometheus", "prometheus.yml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg prometheusConfig
	if err := yaml.Unmarshal(raw, &cfg); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	p := loadCompose(t, nil, nil)
	jobs := map[string]bool{}
	for _, sc := range cfg.ScrapeConfigs {
		jobs[sc.JobName] = true
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, err := net.SplitHostPort(target)
				if _, ok := p.Services[host]; err != nil || !ok {
					t.Errorf("job %s scrapes %s, which is no compose service", sc.JobName, target)
				}
			}
		}
		for _, sd := range sc.ConsulSDConfigs {
			// Over TLS with the development CA, and with Prometheus's own
			// token (Consul's ACLs deny anonymous reads).
			if "https://"+sd.Server != consulAddr || sd.Scheme != "https" || sd.TLSConfig.CAFile != consulCACert {
				t.Errorf("job %s asks Consul at %s://%s (CA %q), want %s with CA %s", sc.JobName, sd.Scheme, sd.Server, sd.TLSConfig.CAFile, consulAddr, consulCACert)
			}
			if sd.Authorization.Type != "Bearer" || sd.Authorization.CredentialsFile != consulTokenFile {
				t.Errorf("job %s: authorization %+v, want Bearer from %s", sc.JobName, sd.Authorization, consulTokenFile)
			}
			if !slices.Equal(sd.Services, appNames) {
				t.Errorf("job %s discovers %v, want every service %v", sc.JobName, sd.Services, appNames)
			}
		}
	}
	// The control plane, the apps (Consul), the sidecars (Consul) and the
	// edge, each with the path it serves metrics on.
	want := map[string]string{"controlplane": "", "services": "/metrics", "envoy-sidecars": "/stats/prometheus", "envoy-edge": "/stats/prometheus"}
	for _, sc := range cfg.ScrapeConfigs {
		if path, ok := want[sc.JobName]; ok && path != "" && sc.MetricsPath != path {
			t.Errorf("job %s scrapes %q, want %q", sc.JobName, sc.MetricsPath, path)
		}
	}
	for job := range want {
		if !jobs[job] {
			t.Errorf("no scrape job %s", job)
		}
	}
	// Envoys are scraped on their metrics listener, never on the admin
	// API (which listens on their loopback only); apps through their
	// sidecar's expose listener, never through the port they registered
	// (the inbound listener, mesh certificates only with MESH_MTLS). Both
	// at the address each instance registered in Consul.
	ports := map[string]int{"services": sidecarExposePort, "envoy-sidecars": envoyMetricsPort, "envoy-edge": envoyMetricsPort}
	for _, sc := range cfg.ScrapeConfigs {
		want, ok := ports[sc.JobName]
		if !ok {
			continue
		}
		var got []string
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				_, port, _ := net.SplitHostPort(target)
				got = append(got, port)
			}
		}
		for _, rc := range sc.RelabelConfigs {
			if rc.TargetLabel != "__address__" {
				continue
			}
			host, port, _ := strings.Cut(rc.Replacement, ":")
			got = append(got, port)
			if !slices.Equal(rc.SourceLabels, []string{"__meta_consul_service_address"}) || host != "$1" {
				t.Errorf("job %s: __address__ %q from %v, want the registered address ($1 of __meta_consul_service_address)", sc.JobName, rc.Replacement, rc.SourceLabels)
			}
		}
		switch {
		case len(got) == 0 && len(sc.ConsulSDConfigs) > 0:
			t.Errorf("job %s keeps the port registered in Consul (the inbound listener); want %d", sc.JobName, want)
		case len(got) == 0:
			t.Errorf("job %s: no target port", sc.JobName)
		}
		for _, port := range got {
			if port != strconv.Itoa(want) {
				t.Errorf("job %s scrapes port %s, want %d", sc.JobName, port, want)
			}
		}
	}
	prom := p.Services["prometheus"]
	if !mounted(prom, caVolume, consulCACert) {
		t.Errorf("prometheus does not mount %s at %s", caVolume, consulCACert)
	}
	if host := hostPath(t, p.Services["prometheus"], "/etc/prometheus/prometheus.yml"); host != "observability/prometheus/prometheus.yml" {
		t.Errorf("prometheus mounts %q as its configuration", host)
	}
}

// metricNames are the metric families the control plane and the services
// export, read from the code that registers them.
func metricNames(t *testing.T) map[string]bool {
	t.Helper()
	var reg collecting
	serve.NewMetrics(&reg)
	instrument.NewMetrics(&reg, "order")
	fqName := regexp.MustCompile(`fqName: "([^"]+)"`)
	names := map[string]bool{}
	for _, c := range reg {
		ch := make(chan *prometheus.Desc, 16)
		go func() { c.Describe(ch); close(ch) }()
		for d := range ch {
			m := fqName.FindStringSubmatch(d.String())
			if m == nil {
				t.Fatalf("cannot read the metric name of %s", d)
			}
			for _, suffix := range []string{"", "_bucket", "_sum", "_count"} {
				names[m[1]+suffix] = true
			}
		}
	}
	return names
}

// definedMetricNames are the meshop_ metric names the control plane's and
// the services' Go sources (tests excluded) spell out as string literals:
// the names of collectors that need a database, a bus or a certificate
// to build (order's and payment's table gauges, the outbox, the
// consumers' dead letters, the workload identity). A metric renamed in
// the code and not on the dashboard is then missing here.
func definedMetricNames(t *testing.T, root string) map[string]bool {
	t.Helper()
	literal := regexp.MustCompile(`"(meshop_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, dir := range []string{"services", "controlplane"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, e os.DirEntry, err error) error {
			if err != nil || e.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range literal.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// collecting is a prometheus.Registerer that keeps what is registered.
type collecting []prometheus.Collector

func (r *collecting) Register(c prometheus.Collector) error   { *r = append(*r, c); return nil }
func (r *collecting) MustRegister(cs ...prometheus.Collector) { *r = append(*r, cs...) }
func (r *collecting) Unregister(prometheus.Collector) bool    { return true }

// dashboard is the part of a Grafana dashboard the test reads.
type dashboard struct {
	UID    string  `json:"uid"`
	Title  string  `json:"title"`
	Panels []panel `json:"panels"`
}

type panel struct {
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource *datasource `json:"datasource"`
	Targets    []struct {
		Expr       string      `json:"expr"`
		Datasource *datasource `json:"datasource"`
	} `json:"targets"`
}

type datasource struct {
	UID string `json:"uid"`
}

func TestGrafanaDashboardsQueryRealMetrics(t *testing.T) {
	root := repoRoot(t)
	var ds struct {
		Datasources []struct {
			UID  string `json:"uid"`
			Type string `json:"type"`
			URL  string `json:"url"`
		} `json:"datasources"`
	}
	raw, err := os.ReadFile(filepath.Join(root, "observability", "grafana", "provisioning", "datasources", "meshop.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(raw, &ds); err != nil {
		t.Fatal(err)
	}
	p := loadCompose(t, nil, nil)
	uids := map[string]bool{}
	for _, d := range ds.Datasources {
		uids[d.UID] = true
		host := strings.TrimPrefix(d.URL, "http://")
		host, _, _ = strings.Cut(host, ":")
		if _, ok := p.Services[host]; !ok {
			t.Errorf("datasource %s points at %s, which is no compose service", d.UID, d.URL)
		}
	}
	for _, want := range []string{"prometheus", "jaeger"} {
		if !uids[want] {
			t.Errorf("no datasource with uid %q", want)
		}
	}

	known := metricNames(t)
	for m := range definedMetricNames(t, root) {
		known[m] = true
	}
	metric := regexp.MustCompile(`\b(meshop_[a-z0-9_]+|envoy_[a-z0-9_]+|grpc_(?:client|server)_[a-z0-9_]+)`)
	files, _ := filepath.Glob(filepath.Join(root, "observability", "grafana", "dashboards", "*.json"))
	if len(files) == 0 {
		t.Fatal("no dashboards")
	}
	used := map[string]bool{}
	nacksByFlavour := false
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var d dashboard
		if err := json.Unmarshal(raw, &d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if d.UID == "" || d.Title == "" {
			t.Errorf("%s: dashboard without uid or title", f)
		}
		for _, pn := range d.Panels {
			if pn.Type == "row" {
				continue
			}
			if pn.Datasource == nil || !uids[pn.Datasource.UID] {
				t.Errorf("%s: panel %q: datasource %v is not provisioned", f, pn.Title, pn.Datasource)
			}
			if len(pn.Targets) == 0 {
				t.Errorf("%s: panel %q has no query", f, pn.Title)
			}
			for _, tg := range pn.Targets {
				if strings.Contains(tg.Expr, "meshop_controlplane_xds_nacks_total") && strings.Contains(tg.Expr, "flavour") {
					nacksByFlavour = true
				}
				for _, m := range metric.FindAllString(tg.Expr, -1) {
					used[m] = true
					if strings.HasPrefix(m, "meshop_") && !known[m] {
						t.Errorf("%s: panel %q queries %s, which neither the control plane nor the services define", f, pn.Title, m)
					}
				}
			}
		}
	}
	// The issues' panels: push latency, connected Envoys, NACKs (by type
	// and flavour), nodes by sync state, convergence (change seen → ACK),
	// config size per node, services without a passing instance (issue
	// 13); request
	// rate, errors and latency of the services; per-hop gRPC calls and
	// latency on both ends (the kit's grpc-ecosystem Prometheus metrics);
	// money safety (issue 12): orders by status and step, the oldest
	// pending order, parked checkouts, reconcile findings, outbox backlog
	// and age, dead letters, refunds; mesh denials and certificate expiry.
	for _, m := range []string{
		"meshop_controlplane_push_latency_seconds_bucket", "meshop_controlplane_connected_nodes", "meshop_controlplane_xds_nacks_total",
		"meshop_controlplane_nodes", "meshop_controlplane_convergence_seconds_bucket", "meshop_controlplane_node_config_bytes_bucket",
		"meshop_controlplane_services_without_passing_instances", "meshop_controlplane_service_passing_instances",
		"meshop_requests_total", "meshop_request_duration_seconds_bucket",
		"grpc_client_handled_total", "grpc_client_handling_seconds_bucket", "grpc_server_handled_total", "grpc_server_handling_seconds_bucket",
		"meshop_orders", "meshop_orders_oldest_pending_age_seconds", "meshop_orders_parked", "meshop_order_checkouts_parked_total",
		"meshop_order_reconcile_found_total", "meshop_outbox_unsent", "meshop_outbox_oldest_unsent_age_seconds",
		"meshop_events_dead_lettered_total", "meshop_payment_refunds", "meshop_grpc_server_mesh_denied_total",
		"meshop_workload_certificate_expiry_seconds",
	} {
		if !used[m] {
			t.Errorf("no dashboard panel queries %s", m)
		}
	}
	if !nacksByFlavour {
		t.Error("no dashboard panel shows NACKs by node flavour")
	}
	if host := hostPath(t, p.Services["grafana"], "/etc/grafana/provisioning"); host != "observability/grafana/provisioning" {
		t.Errorf("grafana mounts %q as its provisioning", host)
	}
	home := hostPath(t, p.Services["grafana"], env(p.Services["grafana"], "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"))
	if _, err := os.Stat(filepath.Join(root, home)); home == "" || err != nil {
		t.Errorf("grafana's home dashboard %q is not a mounted dashboard", home)
	}
}
