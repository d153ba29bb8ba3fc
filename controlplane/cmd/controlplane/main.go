// Command controlplane is Meshop's xDS control plane: it watches Consul and
// configures every Envoy sidecar and the edge gateway over ADS.
//
//	Consul ──blocking queries──▶ catalog.Watcher ──snapshots──▶ serve.Server.Run
//	                                                               │ model.Builder
//	                                                               │ translate
//	                                                               ▼
//	Envoys ◀──ADS gRPC (XDS_ADDR, :18000)── serve.Server ◀── go-control-plane cache
//	  TLS with the control plane's Consul identity; every stream carries its
//	  node's Consul ACL token (xdsauth)
//	operator ◀──HTTP (DEBUG_ADDR, :18080)── debug.Handler (nodes, config_dump, model, metrics)
//	operator ◀──CSDS gRPC (XDS_ADDR)──────── csds.Service (every client's status and config)
//
// Configuration: environment variables, overridden by flags; see README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	rungroup "github.com/oklog/run"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/csds"
	"github.com/meshop/meshop/controlplane/debug"
	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/policystate"
	"github.com/meshop/meshop/controlplane/serve"
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "controlplane:", err)
		os.Exit(1)
	}
}

// run wires the stages and runs them until ctx ends, a signal arrives or
// one of them fails.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := loadConfig(args, getenv, stderr)
	if err != nil {
		return err
	}

	log := slog.New(slog.NewJSONHandler(stdout, &slog.HandlerOptions{Level: cfg.LogLevel})).With("svc", "controlplane")

	// Metrics: the pipeline's, plus the Go runtime's.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	metrics := serve.NewMetrics(reg)

	// Stage 1: catalog.
	// The Consul source also decides who is an operator (the debug port).
	src, err := catalog.NewConsulSource(cfg.consul())
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	var watcher *catalog.Watcher
	{
		watcher = catalog.NewWatcher(src, catalog.Options{Logger: log, Wait: cfg.ConsulWait, Settle: cfg.ConsulSettle, OnIndex: metrics.SetConsulIndex})
	}

	// The ADS server's TLS and the authentication of its streams.
	var xds *serve.Server
	security, err := newXDSSecurity(cfg, log, reg, func(l serve.Leaf) { xds.SetLeaf(l) })
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}

	// The last good policies, kept in Consul KV across restarts.
	state, err := policystate.NewConsul(cfg.consul())
	if err != nil {
		return fmt.Errorf("consul client: %w", err)
	}
	persist := policystate.NewWriter(state, policystate.WriterOptions{Logger: log})

	// Stages 2-4: model, translate, serve.
	var builder *model.Builder
	{
		builder = model.NewBuilder(model.BuilderOptions{Logger: log, MaxPolicyBytes: cfg.PolicyMaxBytes, OnProblem: metrics.ProblemFound, OnLastGood: persist.Set})
		xds = serve.New(serve.Options{
			Logger: log, Metrics: metrics, Translate: cfg.Translate, Model: builder,
			Quiet: cfg.Quiet, MaxDelay: cfg.MaxDelay, Keepalive: cfg.Keepalive, GRPCOptions: security.options, Identities: security.identities(cfg),
			NodeForgetAfter: cfg.NodeForgetAfter,
		})
	}
	// CSDS on the ADS port, for operators (Consul decides who is one).
	xds.AddService(csds.New(xds, src, log).Register)

	// Listeners first, so a port conflict fails the start, not a goroutine.
	xdsLis, err := net.Listen("tcp", cfg.XDSAddr)
	if err != nil {
		return fmt.Errorf("xDS listener: %w", err)
	}
	debugLis, err := net.Listen("tcp", cfg.DebugAddr)
	if err != nil {
		xdsLis.Close()
		return fmt.Errorf("debug listener: %w", err)
	}

	var g rungroup.Group
	{ // catalog watcher and pipeline share one context
		pctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return ignoreCanceled(watcher.Run(pctx))
		}, func(error) { cancel() })
		g.Add(func() error {
			if err := policystate.Restore(pctx, state, builder, log); err != nil { // before the first build
				return ignoreCanceled(err)
			}
			return ignoreCanceled(xds.Run(pctx, watcher))
		}, func(error) { cancel() })
		g.Add(func() error { return persist.Run(pctx) }, func(error) { cancel() })
	}
	{ // the control plane's identity, then the xDS gRPC server
		sctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return security.run(sctx)
		}, func(error) { cancel() })
		g.Add(func() error {
			if err := security.ready(sctx, log); err != nil {
				xdsLis.Close()
				return err
			}
			return xds.Serve(xdsLis)
		}, func(error) { cancel(); xds.Stop(cfg.ShutdownGrace) })
	}
	{ // debug HTTP server
		srv := &http.Server{
			Handler:           debug.NewHandler(xds, watcher, src, security.auth, reg, log),
			ReadHeaderTimeout: 5 * time.Second,
		}
		g.Add(func() error {
			log.Info("debug server listening", "addr", debugLis.Addr().String())
			if err := srv.Serve(debugLis); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
			defer cancel()
			_ = srv.Shutdown(sctx) // Close below if it times out
			srv.Close()
		})
	}
	{ // signals and the caller's context
		sctx, cancel := context.WithCancel(ctx)
		g.Add(func() error {
			sig := make(chan os.Signal, 1)
			signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
			defer signal.Stop(sig)
			select {
			case s := <-sig:
				log.Info("shutting down", "signal", s.String())
				return nil
			case <-sctx.Done():
				return nil
			}
		}, func(error) { cancel() })
	}

	log.Info("controlplane starting", "consul", cfg.ConsulAddr, "xds", xdsLis.Addr().String(), "debug", debugLis.Addr().String(),
		"collector", cfg.Translate.CollectorAddress, "debounce_quiet", cfg.Quiet.String(), "debounce_max", cfg.MaxDelay.String())
	err = g.Run()
	log.Info("controlplane stopped", "err", err)
	return err
}

func ignoreCanceled(err error) error {
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
