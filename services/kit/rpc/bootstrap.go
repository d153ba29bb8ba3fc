package rpc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/meshop/meshop/services/kit/workload"
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
// checks (gRFC A27, A29).
type Bootstrap struct {
	XDSServers []BootstrapServer `json:"xds_servers"`
	Node       BootstrapNode     `json:"node"`
	// ServerListenerResourceNameTemplate is ServerListenerTemplate.
	ServerListenerResourceNameTemplate string `json:"server_listener_resource_name_template"`
	// CertificateProviders holds CertificateProvider: the workload's
	// identity, which the control plane's security configuration names.
	CertificateProviders map[string]BootstrapCertProvider `json:"certificate_providers"`
}

// CertificateProvider is the certificate provider instance that the
// control plane's TLS contexts name for both the identity and the roots
// (controlplane/translate agrees).
const CertificateProvider = "mesh"

// BootstrapServer is one control plane.
type BootstrapServer struct {
	ServerURI      string           `json:"server_uri"`
	ChannelCreds   []BootstrapCreds `json:"channel_creds"`
	ServerFeatures []string         `json:"server_features,omitempty"`
}

// BootstrapCreds is one channel credential type.
type BootstrapCreds struct {
	Type   string          `json:"type"`
	Config *XDSCredsConfig `json:"config,omitempty"`
}

// BootstrapCertProvider is a certificate provider instance: gRPC's
// file_watcher plugin, which rereads the files every refresh interval.
type BootstrapCertProvider struct {
	PluginName string            `json:"plugin_name"`
	Config     FileWatcherConfig `json:"config"`
}

// FileWatcherConfig is the file_watcher plugin's configuration.
type FileWatcherConfig struct {
	CertificateFile   string `json:"certificate_file"`
	PrivateKeyFile    string `json:"private_key_file"`
	CACertificateFile string `json:"ca_certificate_file"`
	RefreshInterval   string `json:"refresh_interval"`
}

// BootstrapNode is how the app introduces itself to the control plane.
type BootstrapNode struct {
	ID       string            `json:"id"`      // the Consul instance ID
	Cluster  string            `json:"cluster"` // the service name
	Metadata map[string]string `json:"metadata"`
}

// NewBootstrap is the bootstrap of instance id of service, fetching its
// configuration from the control plane at controlPlane (host:port) with
// the Consul ACL token in tokenFile, its workload identity kept in the
// files of certs (see workload.Files).
func NewBootstrap(controlPlane, id, service, tokenFile string, certs workload.Files) Bootstrap {
	return Bootstrap{
		XDSServers: []BootstrapServer{{
			ServerURI:    controlPlane,
			ChannelCreds: []BootstrapCreds{{Type: XDSCredsType, Config: &XDSCredsConfig{TokenFile: tokenFile, RootsFile: certs.Roots, ServerService: workload.ControlPlane}}},
			// xDS v3 and the ignore-resource-deletion of gRFC A53: a
			// control plane restart must not take every server down.
			ServerFeatures: []string{"xds_v3", "ignore_resource_deletion"},
		}},
		Node:                               BootstrapNode{ID: id, Cluster: service, Metadata: map[string]string{"mesh_flavor": FlavorProxyless}},
		ServerListenerResourceNameTemplate: ServerListenerTemplate,
		CertificateProviders: map[string]BootstrapCertProvider{CertificateProvider: {
			PluginName: "file_watcher",
			Config: FileWatcherConfig{
				CertificateFile: certs.Cert, PrivateKeyFile: certs.Key, CACertificateFile: certs.Roots,
				RefreshInterval: "2s",
			},
		}},
	}
}

// Files are the files of the bootstrap's certificate provider, where the
// app writes its workload identity.
func (b Bootstrap) Files() workload.Files {
	c := b.CertificateProviders[CertificateProvider].Config
	return workload.Files{Cert: c.CertificateFile, Key: c.PrivateKeyFile, Roots: c.CACertificateFile}
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
func CheckBootstrap(path, id, service string) (Bootstrap, error) {
	var b Bootstrap
	if path == "" {
		return b, fmt.Errorf("proxyless mode needs %s, the path of gRPC's xDS bootstrap file", BootstrapEnv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return b, fmt.Errorf("%s: %w", BootstrapEnv, err)
	}
	if err := json.Unmarshal(data, &b); err != nil {
		return b, fmt.Errorf("%s %s is not JSON: %w", BootstrapEnv, path, err)
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
		case len(b.XDSServers[0].ChannelCreds) == 0 || b.XDSServers[0].ChannelCreds[0].Type != XDSCredsType || b.XDSServers[0].ChannelCreds[0].Config == nil:
			return fmt.Errorf("xds_servers[0].channel_creds[0] must be %q with its token and roots files", XDSCredsType)
		}
		f := b.Files()
		if f.Cert == "" || f.Key == "" || f.Roots == "" {
			return fmt.Errorf("certificate_providers.%s needs certificate_file, private_key_file and ca_certificate_file", CertificateProvider)
		}
		return nil
	}()
	if problem != nil {
		return b, fmt.Errorf("%s %s: %w", BootstrapEnv, path, problem)
	}
	return b, nil
}
