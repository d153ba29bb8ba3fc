// Command xdsload measures Meshop's control plane and Consul's built-in
// xDS server side by side with simulated Envoys (see package
// xdstest/xdsload for the method) and writes the report as JSON.
//
//	go build -o bin/controlplane ./controlplane/cmd/controlplane
//	go run ./controlplane/cmd/xdsload -controlplane bin/controlplane -nodes 100,1000 -out xdsload.json
//
// It needs ./bin/consul (make tools). Progress goes to stderr.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/meshop/meshop/controlplane/xdstest/xdsload"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintln(os.Stderr, "xdsload:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("xdsload", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		o                   xdsload.Options
		nodes, servers, cat string
		out                 string
	)
	fs.StringVar(&o.Dir, "dir", "", "working directory for Consul's data, logs and profiles (default: a new temp dir)")
	fs.StringVar(&nodes, "nodes", "100,1000,2000", "fleet sizes N, comma separated")
	fs.IntVar(&o.Upstreams, "upstreams", 3, "upstream services M each node's service calls")
	fs.IntVar(&o.Instances, "instances", 10, "instances K of each upstream")
	fs.IntVar(&o.Rounds, "rounds", 3, "rounds of each change scenario")
	fs.DurationVar(&o.Settle, "settle", time.Second, "pause between scenarios")
	fs.DurationVar(&o.Timeout, "timeout", 5*time.Minute, "longest wait for a fleet to converge")
	fs.StringVar(&servers, "servers", strings.Join([]string{xdsload.MeshopDelta, xdsload.MeshopSotW, xdsload.ConsulDelta, xdsload.ConsulDeltaMax}, ","), "servers to measure")
	fs.IntVar(&o.ConsulMaxNodes, "consul-max-nodes", 0, "skip Consul's servers at fleets larger than this (0: no limit)")
	fs.StringVar(&o.ControlPlaneBin, "controlplane", "", "Meshop control plane binary (empty: run its stages in-process, without memory figures)")
	fs.StringVar(&cat, "catalog", "100x10,1000x10,100x100", "sizes of the catalog scenario, <services>x<instances per service>, comma separated; empty skips it")
	fs.IntVar(&o.CatalogSims, "catalog-sims", 100, "connected Envoys in the catalog scenario")
	fs.IntVar(&o.CostFlips, "cost-flips", 10, "health flips the cost-of-one-change figure averages over")
	fs.BoolVar(&o.Profile, "profile", false, "take CPU profiles of each server at the largest N")
	fs.StringVar(&out, "out", "xdsload.json", "report file (JSON)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	if o.Nodes, err = ints(nodes); err != nil {
		return fmt.Errorf("-nodes: %w", err)
	}
	if o.Catalog, err = catalogSizes(cat); err != nil {
		return fmt.Errorf("-catalog: %w", err)
	}
	o.Servers = strings.Split(servers, ",")
	if o.Dir == "" {
		if o.Dir, err = os.MkdirTemp("", "xdsload-"); err != nil {
			return err
		}
	}
	o.Log = stderr
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	rep, runErr := xdsload.Run(ctx, o)
	if rep != nil {
		b, err := json.MarshalIndent(rep, "", "  ")
		if err != nil {
			return err
		}
		if err := os.WriteFile(out, b, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "xdsload: report written to %s (work dir %s)\n", out, o.Dir)
	}
	return runErr
}

func ints(s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.Atoi(f)
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("%q is not a positive number", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// catalogSizes parses "100x10,1000x10".
func catalogSizes(s string) ([]xdsload.CatalogSize, error) {
	var out []xdsload.CatalogSize
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		svcs, inst, ok := strings.Cut(f, "x")
		n, err1 := strconv.Atoi(svcs)
		k, err2 := strconv.Atoi(inst)
		if !ok || err1 != nil || err2 != nil || n <= 0 || k <= 0 {
			return nil, fmt.Errorf("%q is not <services>x<instances> (for example 100x10)", f)
		}
		out = append(out, xdsload.CatalogSize{Services: n, Instances: k})
	}
	return out, nil
}
