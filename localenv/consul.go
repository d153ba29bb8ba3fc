package localenv

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// ConsulOptions says where a Consul agent listens and keeps its state.
type ConsulOptions struct {
	Dir      string // data dir and log live here; kept across Restart
	HTTPPort int    // HTTP API and UI
	GRPCPort int    // plain-text gRPC (Consul's own xDS); 0 disables it
	// HTTPSPort is the HTTPS API (HTTP/2), with a certificate from
	// LocalTLS(Dir/tls); 0 disables it.
	HTTPSPort int
	// ServerPort and SerfLANPort are Consul's internal RPC and gossip ports.
	ServerPort  int
	SerfLANPort int
	// ManagementToken is the ACL system's initial management token (ACLs
	// are always on, default deny). "" reads Dir/management-token, or
	// creates it there: a local run keeps its token across restarts.
	ManagementToken string
}

// Consul is a single-node Consul server agent (UI enabled) that keeps its
// state in a data directory, so a restart keeps the catalog: the way a real
// server behaves, and what restart tests need. ACLs are on with default
// deny: anonymous requests read nothing and write nothing, and every
// client presents a token (ManagementToken, ServiceToken, PolicyToken).
type Consul struct {
	Opts ConsulOptions
	*Process
}

// HTTPAddr is the agent's HTTP address, host:port.
func (c *Consul) HTTPAddr() string { return "127.0.0.1:" + strconv.Itoa(c.Opts.HTTPPort) }

// HTTPSAddr is the agent's HTTPS address, https://host:port ("" when
// Opts.HTTPSPort is 0). Clients trust CAFile.
func (c *Consul) HTTPSAddr() string {
	if c.Opts.HTTPSPort == 0 {
		return ""
	}
	return "https://127.0.0.1:" + strconv.Itoa(c.Opts.HTTPSPort)
}

// CAFile is the CA of the agent's HTTPS certificate.
func (c *Consul) CAFile() string { return filepath.Join(c.Opts.Dir, "tls", "ca.pem") }

// StartConsul starts the agent, waits until it has elected itself leader,
// and applies the repository's config entries (service-defaults and
// intentions, consul/config).
func StartConsul(ctx context.Context, opts ConsulOptions) (*Consul, error) {
	bin, err := Binary("consul")
	if err != nil {
		return nil, err
	}
	if opts.ManagementToken == "" {
		// Consul's tokens are UUIDs.
		if opts.ManagementToken, err = KeptSecret(filepath.Join(opts.Dir, "management-token"), uuid.NewString); err != nil {
			return nil, fmt.Errorf("localenv: consul management token: %w", err)
		}
	}
	c := &Consul{Opts: opts}
	if err := c.start(ctx, bin); err != nil {
		return nil, err
	}
	if err := c.applyConfigEntries(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Consul) start(ctx context.Context, bin string) error {
	o := c.Opts
	grpc, https, tlsHCL := -1, -1, ""
	if o.GRPCPort != 0 {
		grpc = o.GRPCPort
	}
	if o.HTTPSPort != 0 {
		f, err := LocalTLS(filepath.Join(o.Dir, "tls"))
		if err != nil {
			return fmt.Errorf("localenv: consul TLS files: %w", err)
		}
		https = o.HTTPSPort
		tlsHCL = fmt.Sprintf("\ntls { https { ca_file = %q, cert_file = %q, key_file = %q, verify_incoming = false } }", f.CAFile, f.CertFile, f.KeyFile)
	}
	// Fast Raft timings (as -dev uses) so leader election takes well under
	// a second; every port we do not need is switched off.
	hcl := fmt.Sprintf(`performance { raft_multiplier = 1 }
ports { http = %d, https = %d, dns = -1, grpc = %d, grpc_tls = -1, serf_lan = %d, serf_wan = -1, server = %d }
connect { enabled = true }
ui_config { enabled = true }%s
acl {
  enabled = true
  default_policy = "deny"
  enable_token_persistence = true
  tokens { initial_management = %q, agent = %q }
}
log_level = "info"`, o.HTTPPort, https, grpc, o.SerfLANPort, o.ServerPort, tlsHCL, o.ManagementToken, o.ManagementToken)
	args := []string{"agent", "-server", "-bootstrap-expect=1", "-node=meshop-local",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-data-dir=" + filepath.Join(o.Dir, "data"), "-hcl=" + hcl}
	p, err := StartProcess("consul", filepath.Join(o.Dir, "consul.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	c.Process = p
	return c.waitReady(ctx)
}

// waitReady waits until the management token works: the agent has
// elected itself leader and created the token (a new server does both
// within a second or two).
func (c *Consul) waitReady(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for {
		err := c.call(ctx, http.MethodGet, "/v1/acl/token/self", nil, nil)
		if err == nil {
			return nil
		}
		select {
		case <-c.Done():
			return fmt.Errorf("localenv: consul exited before it was ready:\n%s", c.Tail(3000))
		case <-ctx.Done():
			return fmt.Errorf("localenv: consul has no leader or no usable management token after 60s (%v):\n%s", err, c.Tail(3000))
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// ManagementToken is the token that may do anything: tests' own clients
// and the Consul UI use it.
func (c *Consul) ManagementToken() string { return c.Opts.ManagementToken }

// ServiceToken creates a token with Consul's service identity of service:
// it registers, checks and deregisters that service (and its sidecar)
// and reads the catalog, nothing else.
func (c *Consul) ServiceToken(ctx context.Context, service string) (string, error) {
	var tok struct{ SecretID string }
	err := c.call(ctx, http.MethodPut, "/v1/acl/token", map[string]any{
		"Description":       "meshop service " + service,
		"ServiceIdentities": []map[string]string{{"ServiceName": service}},
	}, &tok)
	return tok.SecretID, err
}

// PolicyToken creates (or replaces) the ACL policy name with rules and a
// token that carries it alone.
func (c *Consul) PolicyToken(ctx context.Context, name, rules string) (string, error) {
	var policy struct{ ID string }
	if err := c.call(ctx, http.MethodGet, "/v1/acl/policy/name/"+name, nil, &policy); err != nil && !errors.Is(err, errNotFound) {
		return "", err
	}
	path := "/v1/acl/policy"
	if policy.ID != "" {
		path += "/" + policy.ID
	}
	if err := c.call(ctx, http.MethodPut, path, map[string]any{"Name": name, "Rules": rules}, &policy); err != nil {
		return "", err
	}
	var tok struct{ SecretID string }
	err := c.call(ctx, http.MethodPut, "/v1/acl/token", map[string]any{
		"Description": "meshop " + name,
		"Policies":    []map[string]string{{"ID": policy.ID}},
	}, &tok)
	return tok.SecretID, err
}

// ControlPlaneToken creates a token with the control plane's policy,
// consul/acl/controlplane.hcl in the repository (the file compose and
// operators use too).
func (c *Consul) ControlPlaneToken(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	rules, err := os.ReadFile(filepath.Join(root, "consul", "acl", "controlplane.hcl"))
	if err != nil {
		return "", fmt.Errorf("localenv: control plane ACL policy: %w", err)
	}
	return c.PolicyToken(ctx, "meshop-controlplane", string(rules))
}

var errNotFound = errors.New("not found")

// call sends one request to the agent's HTTP API with the management
// token and decodes a JSON answer into out (when not nil).
func (c *Consul) call(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://"+c.HTTPAddr()+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("X-Consul-Token", c.Opts.ManagementToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return fmt.Errorf("consul %s %s: %w", method, path, errNotFound)
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("consul %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	case out != nil:
		return json.Unmarshal(b, out)
	}
	return nil
}

// KeptSecret reads the secret kept in path, or makes one with newSecret
// and keeps it there, readable by the owner only: a local run's secrets
// survive its restarts, as its data does.
func KeptSecret(path string, newSecret func() string) (string, error) {
	if b, err := os.ReadFile(path); err == nil {
		return strings.TrimSpace(string(b)), nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	secret := newSecret()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", err
	}
	return secret, nil
}

// Restart stops the agent and starts it again on the same ports and data.
func (c *Consul) Restart(ctx context.Context) error {
	if err := c.Stop(10 * time.Second); err != nil {
		return err
	}
	bin, err := Binary("consul")
	if err != nil {
		return err
	}
	return c.start(ctx, bin)
}

// newConsulOptions picks free ports and a data directory under dir.
func newConsulOptions(dir string, withGRPC bool) (ConsulOptions, error) {
	ports, err := FreePorts(5)
	if err != nil {
		return ConsulOptions{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ConsulOptions{}, err
	}
	o := ConsulOptions{Dir: dir, HTTPPort: ports[0], ServerPort: ports[1], SerfLANPort: ports[2], HTTPSPort: ports[4]}
	if withGRPC {
		o.GRPCPort = ports[3]
	}
	return o, nil
}
