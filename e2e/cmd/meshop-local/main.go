// Command meshop-local runs the local Meshop system (`make run`): Consul,
// Jaeger, NATS (embedded), the control plane and every service with SQLite
// (proxyless, or behind sidecars where envoy is on PATH), on the fixed
// local port plan, until Ctrl-C. State (logs, databases, the JetStream
// store) lives in ./.run and survives restarts; `make clean` removes it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"text/tabwriter"

	"github.com/meshop/meshop/e2e/system"
	"github.com/meshop/meshop/localenv"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "meshop-local:", err)
		os.Exit(1)
	}
}

func run() error {
	root, err := localenv.RepoRoot()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, ".run")
	plan := system.FixedPlan(dir)
	if os.Getenv("MESH_MODE") != "proxyless" {
		plan.Envoy = system.LookupEnvoy()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	if plan.Envoy != "" {
		fmt.Printf("sidecar mode: %s runs a sidecar per service and the edge on :%d (MESH_MODE=proxyless make run to skip Envoy)\n", plan.Envoy, plan.Edge)
	} else {
		fmt.Printf("proxyless mode: no envoy on PATH, so the services' gRPC clients and servers take their config from the control plane (xDS on :%d)\n", plan.ControlPlaneXDS)
	}
	fmt.Println("starting Consul, Jaeger, NATS, the control plane and the services")
	sys, err := system.Start(ctx, plan, dir)
	if err != nil {
		return err
	}
	printPlan(sys)
	<-ctx.Done()
	fmt.Println("\nstopping (services drain and deregister first)")
	return sys.Stop()
}

func printPlan(sys *system.System) {
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "\nWHAT\tURL")
	fmt.Fprintf(w, "Consul UI\thttp://%s/ui\n", sys.Consul.HTTPAddr())
	fmt.Fprintf(w, "Consul management token (ACLs on: log in to the UI with it)\t%s\n", sys.Consul.ManagementToken())
	fmt.Fprintf(w, "Jaeger query API (UI: see README)\t%s/api/services\n", sys.Jaeger.UIURL())
	fmt.Fprintf(w, "OTLP gRPC\t%s\n", sys.Jaeger.OTLPEndpoint())
	fmt.Fprintf(w, "NATS JetStream (embedded; a user per service)\t%s\n", sys.NATS.Addr())
	fmt.Fprintf(w, "control plane debug (xDS on :%d)\t%s/debug/nodes\n", sys.Plan.ControlPlaneXDS, sys.ControlPlaneURL())
	if sys.Plan.Envoy != "" {
		fmt.Fprintf(w, "API through the edge Envoy\thttp://127.0.0.1:%d/api/products\n", sys.Plan.Edge)
	}
	for _, svc := range system.Services {
		if inst := sys.Instance(svc); inst != nil {
			fmt.Fprintf(w, "%s app (gRPC on :%d)\t%s\n", svc, sys.Plan.GRPC[svc], inst.URL())
		}
	}
	fmt.Fprintf(w, "logs and databases\t%s\n", sys.Dir)
	w.Flush()
	fmt.Printf(`
Look at the mesh with meshctl (make run built it; it reads the control
plane on :%d and Consul on %s by default):
  export CONSUL_HTTP_TOKEN_FILE=%s
  bin/meshctl proxy-status            every node: what it was sent, what it ACKed
  bin/meshctl check                   preflight; exit status 1 when something is wrong
  bin/meshctl describe service order  instances, upstreams, callers, policy, intentions
`, sys.Plan.ControlPlaneDebug, sys.Consul.HTTPAddr(), filepath.Join(sys.Plan.Consul.Dir, "management-token"))
	fmt.Println("\nCtrl-C stops everything.")
}
