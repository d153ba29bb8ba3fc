package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/services/kit/workload"
)

// config is everything the control plane can be told. Each setting comes
// from its environment variable, and a flag of the same meaning overrides
// it (handy for local runs); README.md documents the table below.
type config struct {
	ConsulAddr     string
	ConsulToken    string
	ConsulCACert   string
	XDSTLS         bool
	XDSTokenTTL    time.Duration
	ConsulWait     time.Duration
	ConsulSettle   time.Duration
	XDSAddr        string
	DebugAddr      string
	Quiet          time.Duration
	MaxDelay       time.Duration
	Keepalive      time.Duration
	ShutdownGrace  time.Duration
	PolicyMaxBytes int
	LogLevel       slog.Level
	Translate      translate.Config

	// NodeForgetAfter is how long a node without a stream stays listed.
	NodeForgetAfter time.Duration
}

// consul is how the control plane reaches Consul.
func (c config) consul() catalog.Connection {
	return catalog.Connection{Address: c.ConsulAddr, Token: c.ConsulToken, CAFile: c.ConsulCACert}
}

// setting is one row of the configuration table.
type setting struct {
	env, flag, def, usage string
	set                   func(c *config, v string) error
}

func settings() []setting {
	dur := func(dst func(*config) *time.Duration, minimum time.Duration) func(*config, string) error {
		return func(c *config, v string) error {
			d, err := time.ParseDuration(v)
			if err != nil {
				return fmt.Errorf("want a duration like 100ms, got %q", v)
			}
			if d < minimum {
				return fmt.Errorf("%s is below the minimum %s", d, minimum)
			}
			*dst(c) = d
			return nil
		}
	}
	port := func(dst func(*config) *uint32) func(*config, string) error {
		return func(c *config, v string) error {
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				return fmt.Errorf("want a TCP port (1-65535), got %q", v)
			}
			*dst(c) = uint32(p)
			return nil
		}
	}
	count := func(dst func(*config) *uint32) func(*config, string) error {
		return func(c *config, v string) error {
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil || n == 0 {
				return fmt.Errorf("want a positive integer, got %q", v)
			}
			*dst(c) = uint32(n)
			return nil
		}
	}
	boolean := func(dst func(*config) *bool) func(*config, string) error {
		return func(c *config, v string) error {
			b, err := strconv.ParseBool(v)
			if err != nil {
				return fmt.Errorf("want true or false, got %q", v)
			}
			*dst(c) = b
			return nil
		}
	}
	addr := func(dst func(*config) *string) func(*config, string) error {
		return func(c *config, v string) error {
			_, p, err := net.SplitHostPort(v)
			if err != nil {
				return fmt.Errorf("want host:port, got %q", v)
			}
			if _, err := strconv.ParseUint(p, 10, 16); err != nil {
				return fmt.Errorf("want host:port with a numeric port, got %q", v)
			}
			*dst(c) = v
			return nil
		}
	}
	return []setting{
		{"CONSUL_HTTP_ADDR", "consul", "127.0.0.1:8500", "Consul agent HTTP address: host:port, or https://host:port for its HTTPS listener",
			func(c *config, v string) error {
				rest, _ := strings.CutPrefix(v, "https://")
				rest, _ = strings.CutPrefix(rest, "http://")
				if err := addr(func(c *config) *string { return &c.ConsulAddr })(c, rest); err != nil {
					return err
				}
				c.ConsulAddr = v
				return nil
			}},
		{"CONSUL_CACERT", "consul-cacert", "", "the CA file of Consul's HTTPS certificate",
			func(c *config, v string) error { c.ConsulCACert = v; return nil }},
		{"CONSUL_HTTP_TOKEN", "consul-token", "", "Consul ACL token, with the policy consul/acl/controlplane.hcl (the variable is better than the flag, which ps shows)",
			func(c *config, v string) error { c.ConsulToken = v; return nil }},
		{"CONSUL_HTTP_TOKEN_FILE", "consul-token-file", "", "a file holding the Consul ACL token (wins over CONSUL_HTTP_TOKEN)",
			func(c *config, v string) error {
				if v == "" {
					return nil
				}
				data, err := os.ReadFile(v)
				if err != nil {
					return err
				}
				c.ConsulToken = strings.TrimSpace(string(data))
				return nil
			}},
		{"CONSUL_WAIT", "consul-wait", "5m", "longest wait of one Consul blocking query",
			dur(func(c *config) *time.Duration { return &c.ConsulWait }, time.Second)},
		{"CONSUL_SETTLE", "consul-settle", "15s", "after a Consul outage, keep instances that were passing for this long while its checks run again (0 disables)",
			dur(func(c *config) *time.Duration { return &c.ConsulSettle }, 0)},
		{"XDS_ADDR", "xds-addr", ":18000", "listen address of the ADS gRPC server",
			addr(func(c *config) *string { return &c.XDSAddr })},
		{"XDS_TLS", "xds-tls", "true", "serve ADS over TLS with the control plane's own certificate from Consul's Connect CA (service " + workload.ControlPlane + "); false only for benchmarks",
			boolean(func(c *config) *bool { return &c.XDSTLS })},
		{"XDS_TOKEN_TTL", "xds-token-ttl", "30s", "how long a stream's Consul ACL token is trusted before Consul is asked again (a revoked token's streams end within it)",
			dur(func(c *config) *time.Duration { return &c.XDSTokenTTL }, time.Second)},
		{"DEBUG_ADDR", "debug-addr", ":18080", "listen address of /debug, /metrics, /health, /ready",
			addr(func(c *config) *string { return &c.DebugAddr })},
		{"DEBOUNCE_QUIET", "debounce-quiet", "100ms", "push once the catalog has been still this long",
			dur(func(c *config) *time.Duration { return &c.Quiet }, time.Millisecond)},
		{"DEBOUNCE_MAX", "debounce-max", "1s", "push at the latest this long after the first change",
			dur(func(c *config) *time.Duration { return &c.MaxDelay }, time.Millisecond)},
		{"XDS_KEEPALIVE", "xds-keepalive", "30s", "gRPC keepalive ping interval on xDS connections",
			dur(func(c *config) *time.Duration { return &c.Keepalive }, time.Second)},
		{"SHUTDOWN_GRACE", "shutdown-grace", "5s", "how long shutdown waits for streams and requests",
			dur(func(c *config) *time.Duration { return &c.ShutdownGrace }, 0)},
		{"NODE_FORGET_AFTER", "node-forget-after", "5m", "how long a node with no open xDS stream stays in /debug/nodes (with what it ACKed) before it is forgotten",
			dur(func(c *config) *time.Duration { return &c.NodeForgetAfter }, time.Second)},
		{"POLICY_MAX_BYTES", "policy-max-bytes", strconv.Itoa(model.MaxPolicyBytes), "largest accepted mesh/policy/<service> value",
			func(c *config, v string) error {
				n, err := strconv.Atoi(v)
				if err != nil || n < 64 || n > 512<<10 {
					return fmt.Errorf("want bytes between 64 and 524288, got %q", v)
				}
				c.PolicyMaxBytes = n
				return nil
			}},
		{"LOG_LEVEL", "log-level", "info", "debug, info, warn or error",
			func(c *config, v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
		{"MESH_COLLECTOR_ADDR", "collector", "127.0.0.1:4317", "OTLP gRPC collector Envoys send spans to (cluster otel_collector); a host name is resolved by Envoy",
			addr(func(c *config) *string { return &c.Translate.CollectorAddress })},
		{"MESH_INBOUND_PORT", "inbound-port", "15006", "sidecar inbound listener port (node metadata inbound_port overrides, but only with the port the instance registered)",
			port(func(c *config) *uint32 { return &c.Translate.InboundPort })},
		{"MESH_OUTBOUND_PORT", "outbound-port", "15001", "sidecar outbound listener port on 127.0.0.1 (node metadata outbound_port overrides)",
			port(func(c *config) *uint32 { return &c.Translate.OutboundPort })},
		{"MESH_EXPOSE_PORT", "expose-port", "15021", "sidecar expose listener port: plaintext GET /health, /ready and /metrics for Consul's checks and Prometheus (node metadata expose_port overrides)",
			port(func(c *config) *uint32 { return &c.Translate.ExposePort })},
		{"MESH_EDGE_PORT", "edge-port", "8080", "edge listener port",
			port(func(c *config) *uint32 { return &c.Translate.EdgePort })},
		{"MESH_EDGE_TLS", "edge-tls", "true", "the edge listener serves HTTPS with the certificate of the SDS secret edge_https, which the edge Envoy reads from MESH_EDGE_TLS_FILE; false: plain HTTP (local runs without a certificate)",
			boolean(func(c *config) *bool { return &c.Translate.EdgeTLS })},
		{"MESH_EDGE_TLS_FILE", "edge-tls-file", translate.DefaultEdgeTLSFile, "path, in the edge Envoy's file system, of the SDS file (a DiscoveryResponse) holding the secret edge_https, which names the certificate and key files",
			func(c *config, v string) error {
				if !strings.HasPrefix(v, "/") {
					return fmt.Errorf("want an absolute path, got %q", v)
				}
				c.Translate.EdgeTLSFile = v
				return nil
			}},
		{"MESH_EDGE_RATE_LIMIT_BURST", "rate-limit-burst", "200", "edge local rate limit: token bucket size (requests), per edge Envoy",
			count(func(c *config) *uint32 { return &c.Translate.RateLimit.Burst })},
		{"MESH_EDGE_RATE_LIMIT_PER_FILL", "rate-limit-per-fill", "100", "edge local rate limit: tokens added per interval",
			count(func(c *config) *uint32 { return &c.Translate.RateLimit.PerFill })},
		{"MESH_EDGE_RATE_LIMIT_INTERVAL", "rate-limit-interval", "1s", "edge local rate limit: refill interval (Envoy requires at least 50ms)",
			dur(func(c *config) *time.Duration { return &c.Translate.RateLimit.Interval }, 50*time.Millisecond)},
		{"MESH_CORS_ORIGINS", "cors-origins", "*", "comma list of browser origins allowed at the edge; * allows any",
			func(c *config, v string) error {
				c.Translate.CORSOrigins = nil
				for _, o := range strings.Split(v, ",") {
					if o = strings.TrimSpace(o); o != "" {
						c.Translate.CORSOrigins = append(c.Translate.CORSOrigins, o)
					}
				}
				if len(c.Translate.CORSOrigins) == 0 {
					return errors.New("want at least one origin or *")
				}
				return nil
			}},
		{"MESH_MTLS", "mtls", "true", "mutual TLS between nodes, with Consul's Connect CA leaves and roots, and the intentions' authorization (RBAC) on every inbound side",
			boolean(func(c *config) *bool { return &c.Translate.MTLS })},
	}
}

// loadConfig reads the environment, then the flags; it reports every bad
// value at once.
func loadConfig(args []string, getenv func(string) string, usageOut io.Writer) (config, error) {
	var c config
	c.Translate = translate.DefaultConfig()
	fs := flag.NewFlagSet("controlplane", flag.ContinueOnError)
	fs.SetOutput(usageOut)
	var errs []error
	ss := settings()
	flags := make([]*string, len(ss))
	for i, s := range ss {
		v := s.def
		if e := strings.TrimSpace(getenv(s.env)); e != "" {
			v = e
		}
		flags[i] = fs.String(s.flag, v, s.usage+" (env "+s.env+")")
	}
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments: %v", fs.Args())
	}
	for i, s := range ss {
		if err := s.set(&c, *flags[i]); err != nil {
			errs = append(errs, fmt.Errorf("%s / -%s: %w", s.env, s.flag, err))
		}
	}
	if c.MaxDelay < c.Quiet {
		errs = append(errs, fmt.Errorf("DEBOUNCE_MAX (%s) is shorter than DEBOUNCE_QUIET (%s)", c.MaxDelay, c.Quiet))
	}
	if c.Translate.InboundPort == c.Translate.OutboundPort {
		errs = append(errs, fmt.Errorf("MESH_INBOUND_PORT and MESH_OUTBOUND_PORT are both %d", c.Translate.InboundPort))
	}
	return c, errors.Join(errs...)
}
