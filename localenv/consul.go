package localenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"
)

// ConsulOptions says where a Consul agent listens and keeps its state.
type ConsulOptions struct {
	Dir      string // data dir and log live here; kept across Restart
	HTTPPort int    // HTTP API and UI
	GRPCPort int    // plain-text gRPC (Consul's own xDS); 0 disables it
	// ServerPort and SerfLANPort are Consul's internal RPC and gossip ports.
	ServerPort  int
	SerfLANPort int
}

// Consul is a single-node Consul server agent (UI enabled) that keeps its
// state in a data directory, so a restart keeps the catalog: the way a real
// server behaves, and what restart tests need.
type Consul struct {
	Opts ConsulOptions
	*Process
}

// HTTPAddr is the agent's HTTP address, host:port.
func (c *Consul) HTTPAddr() string { return "127.0.0.1:" + strconv.Itoa(c.Opts.HTTPPort) }

// StartConsul starts the agent and waits until it has elected itself leader.
func StartConsul(ctx context.Context, opts ConsulOptions) (*Consul, error) {
	bin, err := Binary("consul")
	if err != nil {
		return nil, err
	}
	c := &Consul{Opts: opts}
	if err := c.start(ctx, bin); err != nil {
		return nil, err
	}
	return c, nil
}

func (c *Consul) start(ctx context.Context, bin string) error {
	o := c.Opts
	grpc := -1
	if o.GRPCPort != 0 {
		grpc = o.GRPCPort
	}
	// Fast Raft timings (as -dev uses) so leader election takes well under
	// a second; every port we do not need is switched off.
	hcl := fmt.Sprintf(`performance { raft_multiplier = 1 }
ports { http = %d, https = -1, dns = -1, grpc = %d, grpc_tls = -1, serf_lan = %d, serf_wan = -1, server = %d }
connect { enabled = true }
ui_config { enabled = true }
log_level = "info"`, o.HTTPPort, grpc, o.SerfLANPort, o.ServerPort)
	args := []string{"agent", "-server", "-bootstrap-expect=1", "-node=meshop-local",
		"-bind=127.0.0.1", "-client=127.0.0.1",
		"-data-dir=" + filepath.Join(o.Dir, "data"), "-hcl=" + hcl}
	p, err := StartProcess("consul", filepath.Join(o.Dir, "consul.log"), nil, bin, args...)
	if err != nil {
		return err
	}
	c.Process = p
	return c.waitLeader(ctx)
}

func (c *Consul) waitLeader(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	url := "http://" + c.HTTPAddr() + "/v1/status/leader"
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if resp, err := client.Do(req); err == nil {
			var buf [64]byte
			n, _ := resp.Body.Read(buf[:])
			resp.Body.Close()
			// The body is a JSON string: "" until there is a leader.
			if resp.StatusCode == http.StatusOK && n > 2 {
				return nil
			}
		}
		select {
		case <-c.Done():
			return fmt.Errorf("localenv: consul exited before electing a leader:\n%s", c.Tail(3000))
		case <-ctx.Done():
			return fmt.Errorf("localenv: consul has no leader after 60s:\n%s", c.Tail(3000))
		case <-time.After(50 * time.Millisecond):
		}
	}
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
	ports, err := FreePorts(4)
	if err != nil {
		return ConsulOptions{}, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ConsulOptions{}, err
	}
	o := ConsulOptions{Dir: dir, HTTPPort: ports[0], ServerPort: ports[1], SerfLANPort: ports[2]}
	if withGRPC {
		o.GRPCPort = ports[3]
	}
	return o, nil
}
