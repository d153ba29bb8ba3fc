package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
)

// FlavorProxyless is the node metadata (mesh_flavor) by which a proxyless
// app asks the control plane for gRPC's flavour of its configuration.
const FlavorProxyless = "proxyless"

// ServerListenerTemplate names the inbound listener an xDS server asks for
// (its listening address fills %s). The control plane builds the same name
// (controlplane/translate.ServerListenerTemplate); the system test proves
// they agree.
const ServerListenerTemplate = "grpc/server?xds.resource.listening_address=%s"

// BootstrapEnv is the variable through which grpc-go reads its xDS
// bootstrap file, once, at process start.
const BootstrapEnv = "GRPC_XDS_BOOTSTRAP"

// Bootstrap is the part of gRPC's xDS bootstrap file that Meshop writes and
// checks (gRFC A27).
type Bootstrap struct {
	XDSServers []BootstrapServer `json:"xds_servers"`
	Node       BootstrapNode     `json:"node"`
	// ServerListenerResourceNameTemplate is ServerListenerTemplate.
	ServerListenerResourceNameTemplate string `json:"server_listener_resource_name_template"`
}

// BootstrapServer is one control plane.
type BootstrapServer struct {
	ServerURI      string           `json:"server_uri"`
	ChannelCreds   []BootstrapCreds `json:"channel_creds"`
	ServerFeatures []string         `json:"server_features,omitempty"`
}

// BootstrapCreds is one channel credential type.
type BootstrapCreds struct {
	Type string `json:"type"`
}

// BootstrapNode is how the app introduces itself to the control plane.
type BootstrapNode struct {
	ID       string            `json:"id"`      // the Consul instance ID
	Cluster  string            `json:"cluster"` // the service name
	Metadata map[string]string `json:"metadata"`
}

// NewBootstrap is the bootstrap of instance id of service, fetching its
// configuration from the control plane at controlPlane (host:port).
func NewBootstrap(controlPlane, id, service string) Bootstrap {
	return Bootstrap{
		XDSServers: []BootstrapServer{{
			ServerURI:    controlPlane,
			ChannelCreds: []BootstrapCreds{{Type: "insecure"}},
			// xDS v3 and the ignore-resource-deletion of gRFC A53: a
			// control plane restart must not take every server down.
			ServerFeatures: []string{"xds_v3", "ignore_resource_deletion"},
		}},
		Node:                               BootstrapNode{ID: id, Cluster: service, Metadata: map[string]string{"mesh_flavor": FlavorProxyless}},
		ServerListenerResourceNameTemplate: ServerListenerTemplate,
	}
}

// WriteBootstrap writes b as JSON to path.
func WriteBootstrap(path string, b Bootstrap) error {
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// CheckBootstrap reads the bootstrap file at path and checks it is one for
// instance id of service: a bad bootstrap would otherwise surface only as
// a server that never serves. The error names the problem in one line.
func CheckBootstrap(path, id, service string) error {
	if path == "" {
		return fmt.Errorf("proxyless mode needs %s, the path of gRPC's xDS bootstrap file", BootstrapEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", BootstrapEnv, err)
	}
	var b Bootstrap
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("%s %s is not JSON: %w", BootstrapEnv, path, err)
	}
	problem := func() error {
		switch {
		case len(b.XDSServers) == 0 || b.XDSServers[0].ServerURI == "":
			return errors.New("xds_servers[0].server_uri is empty")
		case b.Node.ID != id:
			return fmt.Errorf("node.id is %q, want the instance ID %q", b.Node.ID, id)
		case b.Node.Cluster != service:
			return fmt.Errorf("node.cluster is %q, want the service %q", b.Node.Cluster, service)
		case b.Node.Metadata["mesh_flavor"] != FlavorProxyless:
			return fmt.Errorf("node.metadata.mesh_flavor is %q, want %q", b.Node.Metadata["mesh_flavor"], FlavorProxyless)
		case b.ServerListenerResourceNameTemplate != ServerListenerTemplate:
			return fmt.Errorf("server_listener_resource_name_template is %q, want %q", b.ServerListenerResourceNameTemplate, ServerListenerTemplate)
		}
		return nil
	}()
	if problem != nil {
		return fmt.Errorf("%s %s: %w", BootstrapEnv, path, problem)
	}
	return nil
}
