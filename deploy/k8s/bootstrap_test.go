package k8s

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	envoycorev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	corev1 "k8s.io/api/core/v1"

	"github.com/meshop/meshop/deploy/envoybootstrap"
	"github.com/meshop/meshop/services/kit/rpc"
	"github.com/meshop/meshop/services/kit/workload"
)

// sampleToken stands for a pod's Consul ACL token (a UUID).
const sampleToken = "6f1c9a52-3e0b-4d7a-9b8e-2c5d4e6f7a81"

// bootstrapWants are the bootstraps the ConfigMap meshop-envoy must hold
// and what each must say (as deploy/bootstrap_test.go wants of envoy/).
var bootstrapWants = map[string]envoybootstrap.Want{
	"sidecar-delta.yaml": {APIType: envoycorev3.ApiConfigSource_DELTA_GRPC, AdminPort: 15000, Sidecar: true, Token: sampleToken},
	"sidecar-sotw.yaml":  {APIType: envoycorev3.ApiConfigSource_GRPC, AdminPort: 15000, Sidecar: true, Token: sampleToken},
	"edge-delta.yaml":    {APIType: envoycorev3.ApiConfigSource_DELTA_GRPC, AdminPort: 9901, Token: sampleToken},
	"edge-sotw.yaml":     {APIType: envoycorev3.ApiConfigSource_GRPC, AdminPort: 9901, Token: sampleToken},
}

// writeConfigMap writes a ConfigMap's keys as files in a new directory,
// as a pod's volume shows them.
func writeConfigMap(t *testing.T, data map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for k, v := range data {
		if err := os.WriteFile(filepath.Join(dir, k), []byte(v), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestConfigMapBootstraps: every Envoy bootstrap in the ConfigMap,
// rendered with a token by the ConfigMap's own render-bootstrap.sh (what
// entrypoint.sh runs in the pod), passes the strict validation envoy/*.yaml
// passes; and every Envoy the chart runs names one of them.
func TestConfigMapBootstraps(t *testing.T) {
	r := render(t, nil)
	cm := r.configMaps["meshop-envoy"]
	if cm == nil {
		t.Fatal("no ConfigMap meshop-envoy")
	}
	dir := writeConfigMap(t, cm.Data)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(sampleToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for file, want := range bootstrapWants {
		t.Run(file, func(t *testing.T) {
			if _, ok := cm.Data[file]; !ok {
				t.Fatalf("ConfigMap meshop-envoy has no %s", file)
			}
			cmd := exec.Command("sh", filepath.Join(dir, "render-bootstrap.sh"), filepath.Join(dir, file))
			cmd.Env = append(os.Environ(), "CONSUL_HTTP_TOKEN_FILE="+tokenFile)
			raw, err := cmd.Output()
			if err != nil {
				t.Fatalf("render-bootstrap.sh %s: %v", file, err)
			}
			b, err := envoybootstrap.Parse(raw)
			if err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			for _, problem := range envoybootstrap.Check(b, want) {
				t.Error(problem)
			}
		})
	}
	for _, v := range variants() {
		r := render(t, v.values)
		for name, pod := range podTemplates(r) {
			for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
				if !strings.Contains(c.Image, "envoy") {
					continue
				}
				path := argAfter(c.Args, "-c")
				if _, ok := bootstrapWants[strings.TrimPrefix(path, "/etc/meshop/envoy/")]; !ok || !strings.HasPrefix(path, "/etc/meshop/envoy/") {
					t.Errorf("%s: %s/%s starts from %q, not a checked bootstrap of the ConfigMap", v.name, name, c.Name, path)
				}
				if !slices.Equal(c.Command, []string{"sh", "/etc/meshop/envoy/entrypoint.sh"}) {
					t.Errorf("%s: %s/%s does not start through entrypoint.sh (which puts the token in the bootstrap): %v", v.name, name, c.Name, c.Command)
				}
			}
		}
	}
}

// TestChartFilesMatchTheRepository: the chart carries copies of files
// Helm cannot reach outside it; they must be the repository's, byte for
// byte, so compose and Kubernetes start from the same bootstraps,
// scripts, policies and intentions.
func TestChartFilesMatchTheRepository(t *testing.T) {
	root := repoRoot(t)
	pairs := map[string]string{
		"files/envoy/*":         "envoy/*",
		"files/tls/*":           "deploy/tls/*.yaml",
		"files/consul/acl/*":    "consul/acl/controlplane.hcl",
		"files/consul/config/*": "consul/config/*.json",
	}
	for inChart, inRepo := range pairs {
		copies, _ := filepath.Glob(filepath.Join(chartDir(t), inChart))
		originals, _ := filepath.Glob(filepath.Join(root, inRepo))
		var names []string
		for _, o := range originals {
			if filepath.Base(o) != "README.md" {
				names = append(names, filepath.Base(o))
			}
		}
		var copyNames []string
		for _, c := range copies {
			copyNames = append(copyNames, filepath.Base(c))
		}
		if len(names) == 0 || !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(copyNames))) {
			t.Errorf("%s holds %v, the repository's %s %v", inChart, copyNames, inRepo, names)
			continue
		}
		for _, name := range names {
			want, err := os.ReadFile(filepath.Join(root, filepath.Dir(inRepo), name))
			if err != nil {
				t.Fatal(err)
			}
			got, err := os.ReadFile(filepath.Join(chartDir(t), filepath.Dir(inChart), name))
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != string(want) {
				t.Errorf("%s/%s differs from %s/%s: copy it again", filepath.Dir(inChart), name, filepath.Dir(inRepo), name)
			}
		}
	}
}

// TestConsulLoginWritesTheProxylessBootstrap runs the init container's
// script from the ConfigMap with stand-ins for consul and curl on PATH:
// it keeps the token and the roots, and writes a gRPC xDS bootstrap that
// the kit accepts for this pod (rpc.CheckBootstrap) and that equals the
// one the kit itself makes (rpc.NewBootstrap), node id the pod's name.
func TestConsulLoginWritesTheProxylessBootstrap(t *testing.T) {
	r := render(t, map[string]any{"mesh": map[string]any{"mode": "proxyless"}})
	cm := r.configMaps["meshop-scripts"]
	if cm == nil {
		t.Fatal("no ConfigMap meshop-scripts")
	}
	scripts := writeConfigMap(t, cm.Data)
	bin, work := t.TempDir(), t.TempDir()
	fakes := map[string]string{
		// consul login ... -token-sink-file=F: writes the token to F.
		"consul": "#!/bin/sh\nfor a; do case $a in -token-sink-file=*) printf '%s\\n' " + sampleToken + " >\"${a#-token-sink-file=}\";; esac; done\n",
		"curl":   "#!/bin/sh\nprintf -- '-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\\n'\n",
	}
	for name, body := range fakes {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pod, svc := "order-7c9f8d6b5-x2k4q", "order"
	d := r.deployments[svc]
	login, ok := containerNamed(d.Spec.Template.Spec, "consul-login")
	if !ok {
		t.Fatal("order has no consul-login init container")
	}
	bootstrap := filepath.Join(work, "bootstrap.json")
	if envOf(login)["GRPC_XDS_BOOTSTRAP"] == "" {
		t.Fatal("the proxyless pod's consul-login has no GRPC_XDS_BOOTSTRAP")
	}
	cmd := exec.Command("sh", filepath.Join(scripts, "consul-login.sh"))
	cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"SERVICE="+svc, "POD_NAME="+pod, "CONSUL_AUTH_METHOD=meshop-k8s",
		"CONSUL_HTTP_ADDR=https://192.0.2.1:8501", "CONSUL_CACERT=/dev/null",
		"CONSUL_HTTP_TOKEN_FILE="+filepath.Join(work, "token"), "CONNECT_CA_ROOTS="+filepath.Join(work, "connect-ca.pem"),
		"SERVICEACCOUNT_TOKEN=/dev/null", "GRPC_XDS_BOOTSTRAP="+bootstrap)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("consul-login.sh: %v\n%s", err, out)
	}
	if token, _ := os.ReadFile(filepath.Join(work, "token")); strings.TrimSpace(string(token)) != sampleToken {
		t.Errorf("token file holds %q", token)
	}
	if roots, _ := os.ReadFile(filepath.Join(work, "connect-ca.pem")); !strings.Contains(string(roots), "BEGIN CERTIFICATE") {
		t.Errorf("no Connect CA roots written")
	}
	got, err := rpc.CheckBootstrap(bootstrap, pod, svc)
	if err != nil {
		t.Fatalf("the kit refuses the bootstrap: %v", err)
	}
	app, _ := containerNamed(d.Spec.Template.Spec, svc)
	files := got.Files()
	if !mountedAt(d.Spec.Template.Spec, app, filepath.Dir(files.Cert)) {
		t.Errorf("the app cannot write its identity: nothing mounted at %s", filepath.Dir(files.Cert))
	}
	want := rpc.NewBootstrap("controlplane:18000", pod, svc, envOf(app)["CONSUL_HTTP_TOKEN_FILE"], workload.Files{Cert: files.Cert, Key: files.Key, Roots: files.Roots})
	gotJSON, _ := json.Marshal(got)
	wantJSON, _ := json.Marshal(want)
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("bootstrap\n%s\nwant what the kit makes\n%s", gotJSON, wantJSON)
	}

	// A pod name that is not a DNS label never reaches the bootstrap.
	cmd.Env = append(cmd.Env, "POD_NAME=order-x/\"}")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("consul-login.sh accepted a pod name that is not a DNS label: %s", out)
	}
}

// mountedAt says whether container c of spec mounts a writable in-memory
// volume at dir.
func mountedAt(spec corev1.PodSpec, c corev1.Container, dir string) bool {
	for _, m := range c.VolumeMounts {
		if m.MountPath != dir || m.ReadOnly {
			continue
		}
		for _, v := range spec.Volumes {
			if v.Name == m.Name && v.EmptyDir != nil && v.EmptyDir.Medium == corev1.StorageMediumMemory {
				return true
			}
		}
	}
	return false
}
