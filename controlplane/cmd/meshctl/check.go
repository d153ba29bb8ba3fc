package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"
)

// checkResult is one line of meshctl check.
type checkResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func newCheckCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "check",
		Short: "Preflight a running system; exit 1 when anything is wrong",
		Long: `check runs every check and prints one line each (OK or FAIL):

  consul          Consul answers and has a leader (GET /v1/status/leader)
  instances       every instance of every service passes its Consul checks
  controlplane    every control-plane replica is ready (GET /ready)
  sync            every connected node acknowledged what it was sent (SYNCED)
  nacks           no connected node is rejecting its configuration

It exits 0 when all pass, 1 when any fails, so scripts and CI can gate on it.`,
		Example: `  meshctl check
  meshctl check -o json
  until meshctl check >/dev/null; do sleep 1; done`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			results := a.runChecks(ctx)
			var failed []string
			for _, r := range results {
				if !r.OK {
					failed = append(failed, r.Name)
				}
			}
			out := cmd.OutOrStdout()
			if a.output != "table" {
				if err := printStructured(out, a.output, results); err != nil {
					return err
				}
			} else {
				for _, r := range results {
					mark := "OK  "
					if !r.OK {
						mark = "FAIL"
					}
					fmt.Fprintf(out, "%s  %-13s %s\n", mark, r.Name, r.Detail)
				}
			}
			if len(failed) > 0 {
				return errReported{fmt.Sprintf("%d of %d checks failed: %s", len(failed), len(results), strings.Join(failed, ", "))}
			}
			return nil
		},
	}
}

func (a *app) runChecks(ctx context.Context) []checkResult {
	var out []checkResult
	add := func(name string, ok bool, format string, args ...any) {
		out = append(out, checkResult{Name: name, OK: ok, Detail: fmt.Sprintf(format, args...)})
	}

	consul, err := a.Consul()
	consulUp := false
	if err != nil {
		add("consul", false, "%v", err)
	} else if leader, err := consul.Status().LeaderWithQueryOptions((&api.QueryOptions{}).WithContext(ctx)); err != nil {
		add("consul", false, "%s: %v", a.consulAddr, oneLine(err.Error()))
	} else if leader == "" {
		add("consul", false, "%s answers but has no leader", a.consulAddr)
	} else {
		consulUp = true
		add("consul", true, "%s, leader %s", a.consulAddr, leader)
	}

	if !consulUp {
		add("instances", false, "not checked: Consul is unreachable")
	} else {
		out = append(out, a.checkInstances(ctx, consul))
	}

	urls, err := a.ControlPlaneURLs()
	if err != nil {
		add("controlplane", false, "%v", err)
	} else {
		var notReady []string
		for _, u := range urls {
			var body struct {
				Status     string   `json:"status"`
				WaitingFor []string `json:"waiting_for"`
				Consul     string   `json:"consul"`
			}
			if err := a.get(ctx, u, "/ready", false, &body); err != nil {
				notReady = append(notReady, oneLine(err.Error()))
			} else if body.Consul != "" {
				notReady = append(notReady, u+": consul "+body.Consul)
			}
		}
		if len(notReady) > 0 {
			add("controlplane", false, "%s", strings.Join(notReady, "; "))
		} else {
			add("controlplane", true, "%d of %d ready", len(urls), len(urls))
		}
	}

	f, err := a.nodes(ctx)
	if err != nil {
		add("sync", false, "%s", oneLine(err.Error()))
		add("nacks", false, "not checked: %s", oneLine(err.Error()))
		return out
	}
	var connected int
	var notSynced, nacking []string
	for _, n := range f.nodes {
		if !n.Connected {
			continue
		}
		connected++
		switch st := n.state(); st {
		case synced:
		case nacked:
			nacking = append(nacking, n.ID+" ("+truncate(n.currentNack(), 100)+")")
		default:
			notSynced = append(notSynced, n.ID+" "+st)
		}
	}
	switch {
	case len(f.unreachable) > 0:
		add("sync", false, "a control plane did not answer: %s", oneLine(f.unreachable[0].Error()))
	case len(notSynced) > 0 || len(nacking) > 0:
		add("sync", false, "%d of %d connected nodes not synced: %s", len(notSynced)+len(nacking), connected,
			strings.Join(append(slices.Clone(notSynced), nodeIDs(nacking)...), ", "))
	default:
		add("sync", true, "%s synced", plural(connected, "connected node"))
	}
	if len(nacking) > 0 {
		add("nacks", false, "configuration rejected by %s: %s", plural(len(nacking), "node"), strings.Join(nacking, "; "))
	} else {
		add("nacks", true, "none")
	}
	return out
}

func nodeIDs(withReason []string) []string {
	out := make([]string, len(withReason))
	for i, s := range withReason {
		id, _, _ := strings.Cut(s, " ")
		out[i] = id + " NACKED"
	}
	return out
}

// checkInstances: every check of every service instance passes (a node
// check failing fails every instance on it, as Consul's health does).
func (a *app) checkInstances(ctx context.Context, consul *api.Client) checkResult {
	res := func(ok bool, format string, args ...any) checkResult {
		return checkResult{Name: "instances", OK: ok, Detail: fmt.Sprintf(format, args...)}
	}
	services, _, err := consul.Catalog().Services((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return res(false, "%s", oneLine(err.Error()))
	}
	var total int
	var bad []string
	names := make([]string, 0, len(services))
	for s := range services {
		names = append(names, s)
	}
	slices.Sort(names)
	for _, s := range names {
		entries, _, err := consul.Health().Service(s, "", false, (&api.QueryOptions{}).WithContext(ctx))
		if err != nil {
			return res(false, "%s: %s", s, oneLine(err.Error()))
		}
		for _, e := range entries {
			total++
			if st := e.Checks.AggregatedStatus(); st != api.HealthPassing {
				bad = append(bad, e.Service.ID+" "+st)
			}
		}
	}
	if len(bad) > 0 {
		return res(false, "%d of %d not passing: %s", len(bad), total, strings.Join(bad, ", "))
	}
	return res(true, "%d of %d passing", total, total)
}

// plural is "1 node", "2 nodes".
func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
