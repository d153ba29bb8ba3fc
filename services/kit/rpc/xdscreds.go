package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/xds/bootstrap"

	"github.com/meshop/meshop/services/kit/workload"
)

// XDSCredsType is the channel credentials type by which a proxyless app
// reaches the control plane (registered with gRPC's xDS bootstrap
// credentials registry): TLS, verifying the control plane's Consul
// certificate against Consul's roots, and the app's Consul ACL token on
// every stream as x-consul-token, as Consul's own xDS server expects.
const XDSCredsType = "meshop_consul"

// TokenHeader is the gRPC metadata key of the Consul ACL token.
const TokenHeader = "x-consul-token"

// XDSCredsConfig is the config of XDSCredsType in the bootstrap.
type XDSCredsConfig struct {
	TokenFile     string `json:"token_file"`     // the Consul ACL token, read on every stream
	RootsFile     string `json:"roots_file"`     // Consul's CA roots (PEM), read on every handshake
	ServerService string `json:"server_service"` // whose SPIFFE ID the server must present
}

func init() { bootstrap.RegisterChannelCredentials(consulCreds{}) }

// consulCreds builds XDSCredsType's bundle from its config.
type consulCreds struct{}

func (consulCreds) Name() string { return XDSCredsType }

func (consulCreds) Build(raw json.RawMessage) (credentials.Bundle, func(), error) {
	var cfg XDSCredsConfig
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, nil, fmt.Errorf("%s config: %w", XDSCredsType, err)
	}
	if cfg.TokenFile == "" || cfg.RootsFile == "" || cfg.ServerService == "" {
		return nil, nil, fmt.Errorf("%s config needs token_file, roots_file and server_service", XDSCredsType)
	}
	tlsCreds := credentials.NewTLS(workload.ClientTLS(workload.RootsFile(cfg.RootsFile), cfg.ServerService))
	return &consulBundle{transport: tlsCreds, token: tokenFile(cfg.TokenFile)}, func() {}, nil
}

// consulBundle is TLS plus the token.
type consulBundle struct {
	transport credentials.TransportCredentials
	token     tokenFile
}

func (b *consulBundle) TransportCredentials() credentials.TransportCredentials { return b.transport }
func (b *consulBundle) PerRPCCredentials() credentials.PerRPCCredentials       { return b.token }
func (b *consulBundle) NewWithMode(string) (credentials.Bundle, error) {
	return nil, errors.New(XDSCredsType + ": no modes")
}

// tokenFile attaches the token in a file to every call: a rotated token
// file takes effect on the next stream.
type tokenFile string

func (f tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	data, err := os.ReadFile(string(f))
	if err != nil {
		return nil, fmt.Errorf("%s: Consul token: %w", XDSCredsType, err)
	}
	return map[string]string{TokenHeader: strings.TrimSpace(string(data))}, nil
}

func (tokenFile) RequireTransportSecurity() bool { return true }
