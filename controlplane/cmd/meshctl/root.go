package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"
)

// Exit codes, for scripts.
const (
	exitOK      = 0
	exitFailed  = 1 // a check found a problem, or a command failed
	exitUsage   = 2 // the command line is wrong
	defaultCP   = "http://127.0.0.1:18080"
	defaultAddr = "http://127.0.0.1:8500"
)

// usageError is a wrong command line: exit 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// errReported is a failure already printed in full on stdout (a check's
// FAIL lines): stderr gets only its one-line summary.
type errReported struct{ summary string }

func (e errReported) Error() string { return e.summary }

// run executes meshctl with args and returns the exit code.
func run(args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	root := newRoot(getenv)
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.Execute()
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(stderr, "meshctl: %s\n", oneLine(err.Error()))
	var ue usageError
	if errors.As(err, &ue) || isCobraUsage(err) {
		return exitUsage
	}
	return exitFailed
}

// isCobraUsage recognises the command-line errors cobra itself returns.
func isCobraUsage(err error) bool {
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "invalid argument", "flag needs an argument", "required flag", "accepts ", "requires at least", "requires at most", "invalid output"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", "; ")), " ")
}

// app holds the global flags and the clients built from them.
type app struct {
	getenv        func(string) string
	controlPlanes string
	consulAddr    string
	token         string
	tokenFile     string
	output        string
	timeout       time.Duration
	http          *http.Client
}

func newRoot(getenv func(string) string) *cobra.Command {
	a := &app{getenv: getenv, http: &http.Client{}}
	root := &cobra.Command{
		Use:   "meshctl",
		Short: "Operate a Meshop mesh: proxy status, proxy config, checks, policies",
		Long: `meshctl talks to the Meshop control plane's debug API and to Consul.

It shows what every proxy (Envoy sidecar, proxyless gRPC app, edge) was sent
and acknowledged, each node's configuration, a service's whole picture, runs a
preflight check of a running system, and validates and writes policies.

Exit codes: 0 ok, 1 a check found a problem or a command failed, 2 usage error.`,
		Example: `  meshctl proxy-status
  meshctl proxy-config clusters order-1
  meshctl check
  meshctl describe service payment
  meshctl policy validate payment.json && meshctl policy set payment payment.json
  meshctl x translate --catalog snapshot.yaml --node order-1`,
		SilenceErrors: true,
		SilenceUsage:  true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case "table", "json", "yaml":
			default:
				return usagef("invalid output %q: want table, json or yaml", a.output)
			}
			if a.timeout <= 0 {
				return usagef("--timeout must be positive, got %s", a.timeout)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	f := root.PersistentFlags()
	f.StringVar(&a.controlPlanes, "controlplane", envOr(getenv, "MESHCTL_CONTROLPLANE", defaultCP),
		"control plane debug URL(s), comma-separated for replicas (env MESHCTL_CONTROLPLANE)")
	f.StringVar(&a.consulAddr, "consul", envOr(getenv, "CONSUL_HTTP_ADDR", defaultAddr), "Consul HTTP address (env CONSUL_HTTP_ADDR)")
	f.StringVar(&a.token, "token", "", "Consul ACL token; operator:read for proxy-config (env CONSUL_HTTP_TOKEN)")
	f.StringVar(&a.tokenFile, "token-file", "", "file holding the Consul ACL token (env CONSUL_HTTP_TOKEN_FILE)")
	f.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	f.DurationVar(&a.timeout, "timeout", 10*time.Second, "deadline of each request to the control plane or Consul")

	root.AddCommand(
		newProxyStatusCmd(a),
		newProxyConfigCmd(a),
		newCheckCmd(a),
		newDescribeCmd(a),
		newPolicyCmd(a),
		newXCmd(a),
	)
	return root
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}

// Token is the Consul ACL token: --token, --token-file, then
// CONSUL_HTTP_TOKEN and CONSUL_HTTP_TOKEN_FILE, as the consul CLI reads
// them.
func (a *app) Token() (string, error) {
	if a.token != "" {
		return a.token, nil
	}
	file := a.tokenFile
	if file == "" {
		if t := a.getenv("CONSUL_HTTP_TOKEN"); t != "" {
			return t, nil
		}
		file = a.getenv("CONSUL_HTTP_TOKEN_FILE")
	}
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("token file: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// ControlPlaneURLs are the replicas' debug URLs, without trailing slash.
func (a *app) ControlPlaneURLs() ([]string, error) {
	var out []string
	for _, u := range strings.Split(a.controlPlanes, ",") {
		u = strings.TrimRight(strings.TrimSpace(u), "/")
		if u == "" {
			continue
		}
		if !strings.Contains(u, "://") {
			u = "http://" + u
		}
		out = append(out, u)
	}
	if len(out) == 0 {
		return nil, usagef("--controlplane is empty")
	}
	return out, nil
}

// Consul is a Consul API client with the address and token of the flags.
func (a *app) Consul() (*api.Client, error) {
	token, err := a.Token()
	if err != nil {
		return nil, err
	}
	cfg := api.DefaultConfig()
	cfg.Address = a.consulAddr
	cfg.Token = token
	cl, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %w", a.consulAddr, err)
	}
	return cl, nil
}

func (a *app) ctx(cmd *cobra.Command) (context.Context, context.CancelFunc) {
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	return context.WithTimeout(ctx, a.timeout)
}

// usageArgs wraps a cobra argument check so that its error exits 2.
func usageArgs(check cobra.PositionalArgs) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := check(cmd, args); err != nil {
			return usageError{fmt.Errorf("%s: %w", cmd.CommandPath(), err)}
		}
		return nil
	}
}

// group is a parent command: without a subcommand it prints its help, an
// unknown subcommand is a usage error.
func group(cmd *cobra.Command) *cobra.Command {
	cmd.Args = func(c *cobra.Command, args []string) error {
		if len(args) > 0 {
			var names []string
			for _, s := range c.Commands() {
				names = append(names, s.Name())
			}
			return usagef("unknown %s subcommand %q; one of: %s", c.CommandPath(), args[0], strings.Join(names, ", "))
		}
		return nil
	}
	cmd.RunE = func(c *cobra.Command, _ []string) error { return c.Help() }
	return cmd
}
