package k8s

import (
	"net"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
)

// TestVariants renders the defaults and every variant, decodes each
// object strictly with client-go's scheme, and checks the chart's
// invariants on it.
func TestVariants(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			r := render(t, v.values)
			proxyless := v.name == "proxyless"
			checkApps(t, r, proxyless)
			checkControlPlane(t, r)
			checkEdge(t, r)
			checkPodSecurity(t, r)
			checkServiceAccounts(t, r)
			checkSecretsResolve(t, r)
			checkNetworkPolicies(t, r, proxyless)
		})
	}
}

// checkApps: every app is a Deployment named after its service whose pod
// runs the app behind its native Envoy sidecar (or, proxyless, alone with
// its gRPC xDS bootstrap), with the node id from the pod's name, Consul
// through the node's agent, probes, a PDB and an HPA.
func checkApps(t *testing.T, r *rendered, proxyless bool) {
	t.Helper()
	for _, svc := range services {
		d := r.deployments[svc]
		if d == nil {
			t.Errorf("no Deployment %s", svc)
			continue
		}
		spec := d.Spec.Template.Spec
		app, ok := containerNamed(spec, svc)
		if !ok || slices.ContainsFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == svc }) {
			t.Errorf("%s: no app container %s among the pod's containers", svc, svc)
			continue
		}
		env := envOf(app)
		if fieldRefOf(app, "POD_NAME") != "metadata.name" || env["INSTANCE_ID"] != "$(POD_NAME)" {
			t.Errorf("%s: INSTANCE_ID %q (POD_NAME from %q), want the pod's name from the Downward API", svc, env["INSTANCE_ID"], fieldRefOf(app, "POD_NAME"))
		}
		if fieldRefOf(app, "HOST_IP") != "status.hostIP" || !strings.HasPrefix(env["CONSUL_HTTP_ADDR"], "https://$(HOST_IP):") {
			t.Errorf("%s: CONSUL_HTTP_ADDR %q, want the node's client agent over HTTPS (HOST_IP from status.hostIP)", svc, env["CONSUL_HTTP_ADDR"])
		}
		if fieldRefOf(app, "POD_IP") != "status.podIP" || env["ADVERTISE_ADDR"] != "$(POD_IP)" {
			t.Errorf("%s: ADVERTISE_ADDR %q, want the pod's IP", svc, env["ADVERTISE_ADDR"])
		}
		envoy, hasEnvoy := containerNamed(spec, "envoy")
		if proxyless {
			if hasEnvoy {
				t.Errorf("%s: an Envoy in proxyless mode", svc)
			}
			if env["MESH_MODE"] != "proxyless" || env["GRPC_XDS_BOOTSTRAP"] == "" || env["GRPC_ADDR"] != "$(POD_IP):9090" {
				t.Errorf("%s: proxyless env MESH_MODE=%q GRPC_XDS_BOOTSTRAP=%q GRPC_ADDR=%q", svc, env["MESH_MODE"], env["GRPC_XDS_BOOTSTRAP"], env["GRPC_ADDR"])
			}
			login, _ := containerNamed(spec, "consul-login")
			if envOf(login)["GRPC_XDS_BOOTSTRAP"] != env["GRPC_XDS_BOOTSTRAP"] {
				t.Errorf("%s: the init container writes the gRPC bootstrap to %q, the app reads %q", svc, envOf(login)["GRPC_XDS_BOOTSTRAP"], env["GRPC_XDS_BOOTSTRAP"])
			}
		} else {
			checkSidecar(t, svc, spec, envoy, hasEnvoy)
			// Behind a sidecar the app binds loopback only.
			for _, key := range []string{"HTTP_ADDR", "GRPC_ADDR"} {
				if host, _, err := net.SplitHostPort(env[key]); err != nil || host != "127.0.0.1" {
					t.Errorf("%s: %s=%q, want 127.0.0.1:<port> behind the sidecar", svc, key, env[key])
				}
			}
			if env["MESH_MODE"] != "sidecar" || env["ADVERTISE_PORT"] != "15006" || env["MESH_EGRESS_URL"] != "http://127.0.0.1:15001" {
				t.Errorf("%s: sidecar env MESH_MODE=%q ADVERTISE_PORT=%q MESH_EGRESS_URL=%q (DESIGN §7)", svc, env["MESH_MODE"], env["ADVERTISE_PORT"], env["MESH_EGRESS_URL"])
			}
			if len(app.Ports) != 0 {
				t.Errorf("%s: the app declares ports %v; behind the sidecar only Envoy's are reachable", svc, app.Ports)
			}
		}
		if got, want := probeTarget(app.LivenessProbe), "/health"; got != want {
			t.Errorf("%s: liveness probe %q, want %s", svc, got, want)
		}
		if got, want := probeTarget(app.ReadinessProbe), "/ready"; got != want {
			t.Errorf("%s: readiness probe %q, want %s", svc, got, want)
		}
		if pdb := r.pdbs[svc]; pdb == nil || !selects(pdb.Spec.Selector.MatchLabels, d) {
			t.Errorf("%s: no PodDisruptionBudget selecting its pods", svc)
		}
		checkAutoscaling(t, r, svc, d)
	}
}

// checkSidecar: Envoy runs as a native sidecar (an init container with
// restartPolicy Always, after consul-login), with a startup probe so the
// app starts once Envoy runs, the pod's name as node id, the service as
// cluster, and a bootstrap from the ConfigMap.
func checkSidecar(t *testing.T, svc string, spec corev1.PodSpec, envoy corev1.Container, ok bool) {
	t.Helper()
	i := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "envoy" })
	if !ok || i < 0 {
		t.Errorf("%s: no Envoy among the init containers (native sidecar)", svc)
		return
	}
	if envoy.RestartPolicy == nil || *envoy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("%s: the Envoy init container has no restartPolicy Always: not a native sidecar", svc)
	}
	if login := slices.IndexFunc(spec.InitContainers, func(c corev1.Container) bool { return c.Name == "consul-login" }); login < 0 || login > i {
		t.Errorf("%s: consul-login must run before the sidecar (it writes its token)", svc)
	}
	if envoy.StartupProbe == nil || envoy.LivenessProbe == nil {
		t.Errorf("%s: the sidecar needs a startup probe (the app waits for it) and a liveness probe", svc)
	}
	if got := argAfter(envoy.Args, "--service-node"); got != "$(POD_NAME)" || fieldRefOf(envoy, "POD_NAME") != "metadata.name" {
		t.Errorf("%s: sidecar --service-node %q, want $(POD_NAME) from metadata.name", svc, got)
	}
	if got := argAfter(envoy.Args, "--service-cluster"); got != svc {
		t.Errorf("%s: sidecar --service-cluster %q", svc, got)
	}
	if !strings.HasPrefix(argAfter(envoy.Args, "-c"), "/etc/meshop/envoy/sidecar-") {
		t.Errorf("%s: sidecar bootstrap %q, want envoy/sidecar-<xds>.yaml from the ConfigMap", svc, argAfter(envoy.Args, "-c"))
	}
}

// checkAutoscaling: an HPA on the app's Deployment whose minimum is the
// wanted replica count, or the Deployment's own count without one.
func checkAutoscaling(t *testing.T, r *rendered, svc string, d *appsv1.Deployment) {
	t.Helper()
	hpa := r.hpas[svc]
	if hpa == nil {
		if d.Spec.Replicas == nil {
			t.Errorf("%s: neither an HPA nor a replica count", svc)
		}
		return
	}
	if hpa.Spec.ScaleTargetRef.Kind != "Deployment" || hpa.Spec.ScaleTargetRef.Name != svc {
		t.Errorf("%s: HPA targets %s/%s", svc, hpa.Spec.ScaleTargetRef.Kind, hpa.Spec.ScaleTargetRef.Name)
	}
	if d.Spec.Replicas != nil {
		t.Errorf("%s: the Deployment sets replicas while an HPA scales it (they would fight)", svc)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 1 || hpa.Spec.MaxReplicas < *hpa.Spec.MinReplicas {
		t.Errorf("%s: HPA min %v max %d", svc, hpa.Spec.MinReplicas, hpa.Spec.MaxReplicas)
	}
}

// checkControlPlane: two replicas, a PDB, readiness on /ready, a Service
// named controlplane (what every bootstrap dials) with ADS on 18000.
func checkControlPlane(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployments["controlplane"]
	if d == nil {
		t.Fatal("no Deployment controlplane")
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 2 {
		t.Errorf("controlplane replicas %v, want 2", d.Spec.Replicas)
	}
	c, _ := containerNamed(d.Spec.Template.Spec, "controlplane")
	if probeTarget(c.ReadinessProbe) != "/ready" || probeTarget(c.LivenessProbe) != "/health" {
		t.Errorf("controlplane probes: readiness %q liveness %q", probeTarget(c.ReadinessProbe), probeTarget(c.LivenessProbe))
	}
	if pdb := r.pdbs["controlplane"]; pdb == nil || !selects(pdb.Spec.Selector.MatchLabels, d) {
		t.Errorf("controlplane: no PodDisruptionBudget selecting its pods")
	}
	s := r.services["controlplane"]
	if s == nil || !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Port == 18000 }) || !selects(s.Spec.Selector, d) {
		t.Errorf("no Service controlplane with port 18000 selecting the control plane")
	}
}

// checkEdge: a Deployment whose Envoy starts from the edge bootstrap of
// the ConfigMap, node id the pod's name, cluster edge, behind a
// LoadBalancer Service.
func checkEdge(t *testing.T, r *rendered) {
	t.Helper()
	d := r.deployments["edge"]
	if d == nil {
		t.Fatal("no Deployment edge")
	}
	envoy, ok := containerNamed(d.Spec.Template.Spec, "envoy")
	if !ok || argAfter(envoy.Args, "--service-cluster") != "edge" || argAfter(envoy.Args, "--service-node") != "$(POD_NAME)" {
		t.Errorf("edge Envoy args %v, want --service-node $(POD_NAME) --service-cluster edge", envoy.Args)
	}
	if !strings.HasPrefix(argAfter(envoy.Args, "-c"), "/etc/meshop/envoy/edge-") {
		t.Errorf("edge bootstrap %q", argAfter(envoy.Args, "-c"))
	}
	if !volumeFromConfigMap(d.Spec.Template.Spec, "envoy", "meshop-envoy") {
		t.Errorf("edge: /etc/meshop/envoy is not the ConfigMap meshop-envoy")
	}
	if envoy.ReadinessProbe == nil || envoy.LivenessProbe == nil {
		t.Errorf("edge: probes missing")
	}
	s := r.services["edge"]
	if s == nil || s.Spec.Type != corev1.ServiceTypeLoadBalancer || !selects(s.Spec.Selector, d) {
		t.Errorf("edge: no LoadBalancer Service selecting it")
	}
	if pdb := r.pdbs["edge"]; pdb == nil || !selects(pdb.Spec.Selector.MatchLabels, d) {
		t.Errorf("edge: no PodDisruptionBudget")
	}
}

// volumeFromConfigMap says whether the pod's volume name is ConfigMap cm.
func volumeFromConfigMap(spec corev1.PodSpec, name, cm string) bool {
	return slices.ContainsFunc(spec.Volumes, func(v corev1.Volume) bool {
		return v.Name == name && v.ConfigMap != nil && v.ConfigMap.Name == cm
	})
}

// selects says whether labels select d's pods.
func selects(labels map[string]string, d *appsv1.Deployment) bool {
	if len(labels) == 0 {
		return false
	}
	for k, v := range labels {
		if d.Spec.Template.Labels[k] != v {
			return false
		}
	}
	return true
}
