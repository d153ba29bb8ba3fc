package k8s

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
)

// podTemplates are the pod specs of every workload, by workload name.
func podTemplates(r *rendered) map[string]corev1.PodTemplateSpec {
	pods := map[string]corev1.PodTemplateSpec{}
	for name, d := range r.deployments {
		pods[name] = d.Spec.Template
	}
	for name, j := range r.jobs {
		pods[name] = j.Spec.Template
	}
	return pods
}

// checkPodSecurity: every container of every pod (init containers too) is
// non-root with a read-only root file system, no privilege escalation, no
// capabilities, and has resource requests and limits; tokens and
// certificates live on in-memory volumes only; no pod mounts the
// Kubernetes API token.
func checkPodSecurity(t *testing.T, r *rendered) {
	t.Helper()
	pods := podTemplates(r)
	if len(pods) < len(services)+3 {
		t.Fatalf("%d workloads rendered", len(pods))
	}
	for name, pod := range pods {
		spec := pod.Spec
		if spec.SecurityContext == nil || spec.SecurityContext.RunAsNonRoot == nil || !*spec.SecurityContext.RunAsNonRoot {
			t.Errorf("%s: pod securityContext.runAsNonRoot not true", name)
		}
		if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
			t.Errorf("%s: mounts the Kubernetes API token", name)
		}
		if spec.HostNetwork || spec.HostPID || spec.HostIPC {
			t.Errorf("%s: shares a host namespace", name)
		}
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			sc := c.SecurityContext
			switch {
			case sc == nil:
				t.Errorf("%s/%s: no securityContext", name, c.Name)
				continue
			case sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser == 0:
				t.Errorf("%s/%s: not a non-root user", name, c.Name)
			case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
				t.Errorf("%s/%s: root file system writable", name, c.Name)
			case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
				t.Errorf("%s/%s: privilege escalation allowed", name, c.Name)
			case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
				t.Errorf("%s/%s: capabilities not dropped", name, c.Name)
			}
			for _, res := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if _, ok := c.Resources.Requests[res]; !ok {
					t.Errorf("%s/%s: no %s request", name, c.Name, res)
				}
				if _, ok := c.Resources.Limits[res]; !ok {
					t.Errorf("%s/%s: no %s limit", name, c.Name, res)
				}
			}
		}
		for _, v := range spec.Volumes {
			if v.HostPath != nil {
				t.Errorf("%s: hostPath volume %s", name, v.Name)
			}
			if v.EmptyDir != nil && v.EmptyDir.Medium != corev1.StorageMediumMemory {
				t.Errorf("%s: emptyDir %s not in memory (tokens, certificates and rendered bootstraps live there)", name, v.Name)
			}
		}
		for _, must := range []string{"consul-acl", "consul-ca"} {
			if !slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool { return v.Name == must && v.EmptyDir != nil }) && r.jobs[name] == nil {
				t.Errorf("%s: no in-memory volume %s", name, must)
			}
		}
	}
}

// checkServiceAccounts: one ServiceAccount per service, named after it
// (the Consul auth method binds the name to the service identity), and no
// two workloads share one.
func checkServiceAccounts(t *testing.T, r *rendered) {
	t.Helper()
	used := map[string]string{}
	for name, pod := range podTemplates(r) {
		sa := pod.Spec.ServiceAccountName
		if r.serviceAccounts[sa] == nil {
			t.Errorf("%s runs as ServiceAccount %q, which the chart does not make", name, sa)
		}
		if other, ok := used[sa]; ok {
			t.Errorf("%s and %s share ServiceAccount %s", name, other, sa)
		}
		used[sa] = name
	}
	for _, svc := range append(slices.Clone(services), "edge", "controlplane") {
		if used[svc] != svc {
			t.Errorf("ServiceAccount %s is used by %q, want the Deployment %s", svc, used[svc], svc)
		}
	}
}

// checkSecretsResolve: a Secret the pods read is either made by the
// chart with every key they read, or named by the values as existing.
func checkSecretsResolve(t *testing.T, r *rendered) {
	t.Helper()
	for name, pod := range podTemplates(r) {
		for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
			for _, e := range c.Env {
				if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
					continue
				}
				ref := e.ValueFrom.SecretKeyRef
				if s := r.secrets[ref.Name]; s != nil {
					if _, ok := s.StringData[ref.Key]; !ok {
						t.Errorf("%s/%s: %s reads key %s of Secret %s, which lacks it", name, c.Name, e.Name, ref.Key, ref.Name)
					}
				}
			}
		}
	}
}

// intention is a service-intentions config entry (consul/config).
type intention struct {
	Name    string
	Sources []struct{ Name, Action string }
}

// allowedSources are the services whose calls svc's intentions allow.
func allowedSources(t *testing.T, svc string) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), "consul", "config", "service-intentions-"+svc+".json"))
	if err != nil {
		t.Fatal(err)
	}
	var in intention
	if err := json.Unmarshal(data, &in); err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range in.Sources {
		if s.Action == "allow" {
			out = append(out, s.Name)
		}
	}
	return out
}

// checkNetworkPolicies: a default deny over the release's pods, and per
// app ingress only from the callers its intentions allow (on the mesh
// port) and from Consul's client agents (on the check port).
func checkNetworkPolicies(t *testing.T, r *rendered, proxyless bool) {
	t.Helper()
	deny := r.netpols["meshop-default-deny"]
	if deny == nil || len(deny.Spec.Ingress) != 0 || !slices.Contains(deny.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) {
		t.Fatalf("no default-deny NetworkPolicy")
	}
	for name, d := range r.deployments {
		if !selects(deny.Spec.PodSelector.MatchLabels, d) {
			t.Errorf("the default deny does not select %s", name)
		}
	}
	checkPort := int32(15021)
	if proxyless {
		checkPort = 8080
	}
	for _, svc := range services {
		np := r.netpols[svc]
		if np == nil || !selects(np.Spec.PodSelector.MatchLabels, r.deployments[svc]) {
			t.Errorf("%s: no NetworkPolicy selecting its pods", svc)
			continue
		}
		var callers []string
		consulChecks := false
		for _, rule := range np.Spec.Ingress {
			if len(rule.From) != 1 {
				t.Errorf("%s: an ingress rule with %d peers", svc, len(rule.From))
				continue
			}
			peer := rule.From[0]
			var ports []int32
			for _, p := range rule.Ports {
				ports = append(ports, p.Port.IntVal)
			}
			if peer.NamespaceSelector != nil {
				consulChecks = peer.PodSelector != nil && slices.Equal(ports, []int32{checkPort})
				continue
			}
			if peer.PodSelector == nil || peer.IPBlock != nil || len(ports) == 0 {
				t.Errorf("%s: an ingress rule that is not pod → port: %+v", svc, rule)
				continue
			}
			caller := peer.PodSelector.MatchLabels["app.kubernetes.io/name"]
			callers = append(callers, caller)
			want := []int32{15006}
			if proxyless {
				want = []int32{9090}
				if caller == "edge" {
					want = []int32{8080}
				}
			}
			if !slices.Equal(ports, want) {
				t.Errorf("%s: %s may reach ports %v, want %v", svc, caller, ports, want)
			}
		}
		if want := allowedSources(t, svc); !slices.Equal(slices.Sorted(slices.Values(callers)), slices.Sorted(slices.Values(want))) {
			t.Errorf("%s: NetworkPolicy admits %v, its intentions allow %v", svc, callers, want)
		}
		if !consulChecks {
			t.Errorf("%s: Consul's client agents cannot reach the check port %d", svc, checkPort)
		}
	}
	for _, name := range []string{"controlplane", "edge"} {
		if np := r.netpols[name]; np == nil || !selects(np.Spec.PodSelector.MatchLabels, r.deployments[name]) || len(np.Spec.Ingress) == 0 {
			t.Errorf("no NetworkPolicy for %s", name)
		}
	}
}
