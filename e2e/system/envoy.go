package system

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/hashicorp/consul/api"
	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/localenv"
)

// SidecarPorts are one local Envoy's listeners. In containers every
// sidecar has 15006/15001/15021/15000/15090 in its own network namespace;
// on one host each needs its own. The edge uses Admin and Metrics only.
type SidecarPorts struct{ Inbound, Outbound, Expose, Admin, Metrics int }

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
// "sidecar" or "edge") for an Envoy on this host, as envoy/entrypoint.sh
// renders it in a container: the node's Consul ACL token in place of
// @CONSUL_TOKEN@, the control plane at 127.0.0.1:xdsPort checked against
// Consul's roots in rootsFile, admin and metrics on the given ports, and,
// for a sidecar, its listener ports in the node metadata the control
// plane reads. The result is JSON, which Envoy reads as a bootstrap too.
func LocalBootstrap(kind string, xdsPort int, ports SidecarPorts, token, rootsFile string) ([]byte, error) {
	root, err := localenv.RepoRoot()
	if err != nil {
		return nil, err
	}
	name := "envoy/" + kind + "-delta.yaml"
	raw, err := os.ReadFile(filepath.Join(root, name))
	if err != nil {
		return nil, err
	}
	js, err := yaml.YAMLToJSON(bytes.ReplaceAll(raw, []byte("@CONSUL_TOKEN@"), []byte(token)))
	if err != nil {
		return nil, fmt.Errorf("system: %s: %w", name, err)
	}
	var b map[string]any
	if err := json.Unmarshal(js, &b); err != nil {
		return nil, err
	}
	set := func(value any, path ...any) {
		if err == nil {
			var m map[string]any
			if m, err = dig(b, path[:len(path)-1]...); err == nil {
				m[path[len(path)-1].(string)] = value
			} else {
				err = fmt.Errorf("system: %s: %v: %w", name, path, err)
			}
		}
	}
	xds, admin, metrics := named(b, "clusters", "xds_cluster"), named(b, "clusters", "envoy_admin"), named(b, "listeners", "prometheus")
	socket := []any{"load_assignment", "endpoints", 0, "lb_endpoints", 0, "endpoint", "address", "socket_address"}
	set("127.0.0.1", append(append([]any{"static_resources", "clusters", xds}, socket...), "address")...)
	set(xdsPort, append(append([]any{"static_resources", "clusters", xds}, socket...), "port_value")...)
	set(rootsFile, "static_resources", "clusters", xds, "transport_socket", "typed_config", "common_tls_context", "validation_context", "trusted_ca", "filename")
	set(ports.Admin, append(append([]any{"static_resources", "clusters", admin}, socket...), "port_value")...)
	set(ports.Metrics, "static_resources", "listeners", metrics, "address", "socket_address", "port_value")
	set("127.0.0.1", "admin", "address", "socket_address", "address")
	set(ports.Admin, "admin", "address", "socket_address", "port_value")
	if kind == "sidecar" {
		set(ports.Inbound, "node", "metadata", "inbound_port")
		set(ports.Outbound, "node", "metadata", "outbound_port")
		set(ports.Expose, "node", "metadata", "expose_port")
	}
	if err != nil {
		return nil, err
	}
	return json.MarshalIndent(b, "", "  ")
}

// named is the index of the static resource called name in the list
// static_resources.<list> (-1: none, which dig reports).
func named(b map[string]any, list, name string) int {
	sr, _ := b["static_resources"].(map[string]any)
	items, _ := sr[list].([]any)
	for i, it := range items {
		if m, ok := it.(map[string]any); ok && m["name"] == name {
			return i
		}
	}
	return -1
}

// consulRoots writes the Connect CA's roots, which the Envoys check the
// control plane's certificate against, to a file of the system's
// directory, and returns its path.
func (s *System) consulRoots(ctx context.Context) (string, error) {
	client, err := api.NewClient(&api.Config{Address: s.Consul.HTTPAddr(), Token: s.Consul.ManagementToken()})
	if err != nil {
		return "", err
	}
	roots, _, err := client.Connect().CARoots((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return "", fmt.Errorf("system: Consul's CA roots: %w", err)
	}
	var pem []byte
	for _, r := range roots.Roots {
		pem = append(pem, r.RootCertPEM...)
		pem = append(pem, '\n')
	}
	path := filepath.Join(s.Dir, "consul-roots.pem")
	return path, os.WriteFile(path, pem, 0o644)
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
			if !ok || k < 0 || k >= len(l) {
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
	token, err := s.Consul.ServiceToken(ctx, cluster)
	if err != nil {
		return nil, fmt.Errorf("system: Consul token of %s: %w", cluster, err)
	}
	roots, err := s.consulRoots(ctx)
	if err != nil {
		return nil, err
	}
	bootstrap, err := LocalBootstrap(kind, s.Plan.ControlPlaneXDS, ports, token, roots)
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
