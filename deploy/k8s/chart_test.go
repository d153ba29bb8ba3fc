package k8s

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// services are the six apps (DESIGN §2); each is a Deployment named after it.
var services = []string{"auth", "user", "product", "order", "payment", "notification"}

// variant is one set of values the chart must render and keep its
// invariants with.
type variant struct {
	name   string
	values map[string]any
}

// externalSecretValues are secrets given in the values, with PostgreSQL
// outside the cluster: the chart makes the Secret.
func externalSecretValues() map[string]any {
	vals := map[string]any{"auth-key-encryption-key": "0123456789abcdef0123456789abcdef"}
	for _, svc := range services {
		vals[svc+"-database-url"] = "postgres://" + svc + ":pw-" + svc + "@db.example.com:5432/" + svc + "?sslmode=verify-full"
		vals[svc+"-nats-password"] = "nats-password-of-" + svc
	}
	return vals
}

// variants: the defaults and the three, plus fixed replicas and
// state-of-the-world ADS.
func variants() []variant {
	return []variant{
		{"defaults", nil},
		{"proxyless", map[string]any{"mesh": map[string]any{"mode": "proxyless"}}},
		{"order-replicas-3", map[string]any{"services": map[string]any{"order": map[string]any{"replicas": 3}}}},
		{"order-replicas-3-fixed", map[string]any{"services": map[string]any{"order": map[string]any{"replicas": 3, "autoscaling": map[string]any{"enabled": false}}}}},
		{"external-postgresql", map[string]any{"secrets": map[string]any{"existingSecret": "", "values": externalSecretValues()}}},
		{"sotw", map[string]any{"mesh": map[string]any{"xds": "sotw"}}},
	}
}

// rendered is one variant's objects by kind and name.
type rendered struct {
	manifests       []Manifest
	objects         []runtime.Object
	deployments     map[string]*appsv1.Deployment
	jobs            map[string]*batchv1.Job
	services        map[string]*corev1.Service
	serviceAccounts map[string]*corev1.ServiceAccount
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	pdbs            map[string]*policyv1.PodDisruptionBudget
	hpas            map[string]*autoscalingv2.HorizontalPodAutoscaler
	netpols         map[string]*networkingv1.NetworkPolicy
}

// render renders the chart with values and decodes every object strictly;
// either failing fails the test.
func render(t *testing.T, values map[string]any) *rendered {
	t.Helper()
	manifests, err := Render(chartDir(t), values)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	objs, err := Decode(manifests)
	if err != nil {
		t.Fatalf("strict decode: %v", err)
	}
	return &rendered{manifests: manifests, objects: objs,
		deployments: byName[*appsv1.Deployment](objs), jobs: byName[*batchv1.Job](objs),
		services: byName[*corev1.Service](objs), serviceAccounts: byName[*corev1.ServiceAccount](objs),
		configMaps: byName[*corev1.ConfigMap](objs), secrets: byName[*corev1.Secret](objs),
		pdbs: byName[*policyv1.PodDisruptionBudget](objs), hpas: byName[*autoscalingv2.HorizontalPodAutoscaler](objs),
		netpols: byName[*networkingv1.NetworkPolicy](objs)}
}

// byName picks the objects of type T, by name.
func byName[T interface{ GetName() string }](objs []runtime.Object) map[string]T {
	out := map[string]T{}
	for _, o := range objs {
		if t, ok := o.(T); ok {
			out[t.GetName()] = t
		}
	}
	return out
}

// repoRoot is the repository's root: go test runs in this package's
// directory, deploy/k8s.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.work")); err != nil {
		t.Fatalf("%s is not the repository's root: %v", root, err)
	}
	return root
}

func chartDir(t *testing.T) string { return filepath.Join(repoRoot(t), ChartPath) }

// envOf is a container's environment by name (literal values only;
// references show as "<ref>").
func envOf(c corev1.Container) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil {
			env[e.Name] = "<ref>"
			continue
		}
		env[e.Name] = e.Value
	}
	return env
}

// fieldRefOf is the Downward API field behind env var name of c ("" if none).
func fieldRefOf(c corev1.Container, name string) string {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			return e.ValueFrom.FieldRef.FieldPath
		}
	}
	return ""
}

// containerNamed finds a container (regular or init) by name.
func containerNamed(spec corev1.PodSpec, name string) (corev1.Container, bool) {
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		if c.Name == name {
			return c, true
		}
	}
	return corev1.Container{}, false
}

// argAfter is the argument after flag in args ("" if none).
func argAfter(args []string, flag string) string {
	i := slices.Index(args, flag)
	if i < 0 || i+1 >= len(args) {
		return ""
	}
	return args[i+1]
}

// probeTarget is what a probe asks: an HTTP path, or the URL an exec
// probe's command ends with, or "tcp".
func probeTarget(p *corev1.Probe) string {
	switch {
	case p == nil:
		return ""
	case p.HTTPGet != nil:
		return p.HTTPGet.Path
	case p.Exec != nil && len(p.Exec.Command) > 0:
		cmd := p.Exec.Command[len(p.Exec.Command)-1]
		if i := strings.Index(cmd, "://"); i >= 0 {
			if j := strings.Index(cmd[i+3:], "/"); j >= 0 {
				return cmd[i+3+j:]
			}
		}
		return cmd
	case p.TCPSocket != nil:
		return "tcp"
	}
	return ""
}
