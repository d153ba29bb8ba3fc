package system

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/localenv"
)

// SidecarPorts are one local sidecar's listeners. In containers every
// sidecar has 15006/15001/15000 in its own network namespace; on one host
// each needs its own.
type SidecarPorts struct{ Inbound, Outbound, Admin int }

// LookupEnvoy returns the envoy binary on PATH, or "" when there is none
// (then the local system runs in proxyless mode).
func LookupEnvoy() string {
	path, err := exec.LookPath("envoy")
	if err != nil {
		return ""
	}
	return path
}

// LocalBootstrap renders the repository's envoy/<kind>-delta.yaml (kind is
// "sidecar" or "edge") for an Envoy on this host: the control plane at
// 127.0.0.1:xdsPort, admin on 127.0.0.1, and, for a sidecar, its listener
// ports in the node metadata the control plane reads. The result is JSON,
// which Envoy reads as a bootstrap too.
func LocalBootstrap(kind string, xdsPort int, ports SidecarPorts) ([]byte, error) {
	root, err := localenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(root, "envoy", kind+"-delta.yaml"))
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("system: envoy/%s-delta.yaml: %w", kind, err)
	}
	var b map[string]any
	if err := json.Unmarshal(js, &b); err != nil {
		return nil, err
	}
	xds, err := dig(b, "static_resources", "clusters", 0, "load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address")
	if err != nil {
		return nil, fmt.Errorf("system: envoy/%s-delta.yaml: xds_cluster address: %w", kind, err)
	}
	xds["address"], xds["port_value"] = "127.0.0.1", xdsPort
	admin, err := dig(b, "admin", "address", "socket_address")
	if err != nil {
		return nil, fmt.Errorf("system: envoy/%s-delta.yaml: admin address: %w", kind, err)
	}
	admin["address"], admin["port_value"] = "127.0.0.1", ports.Admin
	if kind == "sidecar" {
		meta, err := dig(b, "node", "metadata")
		if err != nil {
			return nil, fmt.Errorf("system: envoy/sidecar-delta.yaml: node metadata: %w", err)
		}
		meta["inbound_port"], meta["outbound_port"] = ports.Inbound, ports.Outbound
	}
	return json.MarshalIndent(b, "", "  ")
}

// dig walks maps (string keys) and lists (int keys) down to a map.
func dig(v any, path ...any) (map[string]any, error) {
	for _, step := range path {
		switch k := step.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%v: not an object", step)
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil, fmt.Errorf("[%d]: not in a list", k)
			}
			v = l[k]
		}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%v: not an object", path[len(path)-1])
	}
	return m, nil
}

// startEnvoy runs an Envoy for node (id, cluster) with a rendered
// bootstrap and waits until its admin says it is live.
func (s *System) startEnvoy(ctx context.Context, kind, id, cluster string, ports SidecarPorts) (*localenv.Process, error) {
	bootstrap, err := LocalBootstrap(kind, s.Plan.ControlPlaneXDS, ports)
	if err != nil {
		return nil, err
	}
	path := filepath.Join(s.Dir, "envoy", id+".json")
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, bootstrap, 0o644); err != nil {
		return nil, err
	}
	// --disable-hot-restart: several Envoys on one host would otherwise
	// share (and fight over) one hot-restart shared-memory region.
	p, err := localenv.StartProcess("envoy "+id, filepath.Join(s.Dir, "logs", id+"-envoy.log"), nil, s.Plan.Envoy,
		"-c", path, "--service-node", id, "--service-cluster", cluster, "--disable-hot-restart", "--log-level", "warn")
	if err != nil {
		return nil, err
	}
	waitCtx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := p.WaitHTTP(waitCtx, "http://127.0.0.1:"+strconv.Itoa(ports.Admin)+"/ready", 200); err != nil {
		p.Stop(5 * time.Second)
		return nil, err
	}
	return p, nil
}
