package main

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

func newProxyStatusCmd(a *app) *cobra.Command {
	var all bool
	cmd := &cobra.Command{
		Use:     "proxy-status",
		Aliases: []string{"ps"},
		Short:   "Every node: what it was sent, what it acknowledged, NACKs",
		Long: `proxy-status lists every node the control plane serves (Envoy sidecars,
proxyless gRPC apps, the edge) with its sync state per xDS type:

  SYNCED  the node acknowledged the version last sent
  STALE   a newer version was sent and not acknowledged yet
  NACKED  the node rejected the version sent (it keeps running the previous one);
          the NACK column has its reason

A cell shows the state and the version sent (and, when it differs, /acked).
Disconnected nodes the control plane still remembers are listed with --all.
Services with no passing instance are listed below the table: their callers
get no endpoint.`,
		Example: `  meshctl proxy-status
  meshctl proxy-status -o json | jq '.nodes[] | select(.sync != "SYNCED")'
  meshctl proxy-status --controlplane http://cp-1:18080,http://cp-2:18080`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			f, err := a.nodes(ctx)
			if err != nil {
				return err
			}
			if err := printProxyStatus(cmd, a.output, f, all, time.Now()); err != nil {
				return err
			}
			if len(f.unreachable) > 0 {
				return fmt.Errorf("some control planes did not answer: %w", errors.Join(f.unreachable...))
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&all, "all", false, "also list disconnected nodes the control plane remembers")
	return cmd
}

// statusView is proxy-status's JSON/YAML.
type statusView struct {
	Nodes                  []nodeView `json:"nodes"`
	ServicesWithoutPassing []string   `json:"services_without_passing_instances"`
}

type nodeView struct {
	Name         string              `json:"name"`
	Service      string              `json:"service"`
	Flavour      string              `json:"flavour"`
	Connected    bool                `json:"connected"`
	Sync         string              `json:"sync"`
	Types        map[string]typeView `json:"types"`
	Nack         *nack               `json:"last_nack,omitempty"`
	Nacks        int                 `json:"nacks"`
	LastSeen     time.Time           `json:"last_seen"`
	Notes        []string            `json:"notes,omitempty"`
	ControlPlane string              `json:"control_plane"`
}

type typeView struct {
	State   string `json:"state"`
	Sent    string `json:"version_sent"`
	Acked   string `json:"version_acked,omitempty"`
	Entries int    `json:"resources"`
}

func printProxyStatus(cmd *cobra.Command, format string, f *fleet, all bool, now time.Time) error {
	out := cmd.OutOrStdout()
	var nodes []*nodeStatus
	for _, n := range f.nodes {
		if n.Connected || all {
			nodes = append(nodes, n)
		}
	}
	if format != "table" {
		v := statusView{Nodes: []nodeView{}, ServicesWithoutPassing: f.noPassing}
		if v.ServicesWithoutPassing == nil {
			v.ServicesWithoutPassing = []string{}
		}
		for _, n := range nodes {
			nv := nodeView{Name: n.ID, Service: n.Cluster, Flavour: n.flavour(), Connected: n.Connected, Sync: n.state(),
				Types: map[string]typeView{}, Nack: n.LastNack, Nacks: n.Nacks, LastSeen: n.seen(), Notes: n.Notes, ControlPlane: n.controlPlane}
			for _, t := range xdsTypes {
				if s, ok := n.LastSent[t.url]; ok {
					nv.Types[t.short] = typeView{State: n.typeState(t.url), Sent: s.Version, Acked: n.LastAck[t.url].Version, Entries: s.Resources}
				}
			}
			v.Nodes = append(v.Nodes, nv)
		}
		return printStructured(out, format, v)
	}
	header := []string{"NAME", "SERVICE", "FLAVOUR", "SYNC"}
	for _, t := range xdsTypes {
		header = append(header, t.short)
	}
	header = append(header, "LAST SEEN", "NACK")
	t := newTable(out, header...)
	for _, n := range nodes {
		sync := n.state()
		if !n.Connected {
			sync = "DISCONNECTED"
		}
		cells := []string{n.ID, n.Cluster, n.flavour(), sync}
		for _, x := range xdsTypes {
			cells = append(cells, typeCell(n, x.url))
		}
		note := n.currentNack()
		if note == "" && len(n.Notes) > 0 {
			note = "note: " + n.Notes[0]
		}
		cells = append(cells, age(n.seen(), now), truncate(note, 120))
		t.row(cells...)
	}
	if err := t.flush(); err != nil {
		return err
	}
	if len(nodes) == 0 {
		fmt.Fprintln(out, "(no node connected)")
	}
	if len(f.noPassing) > 0 {
		fmt.Fprintf(out, "\nWARNING: no passing instance: %s (their callers get no endpoint)\n", strings.Join(f.noPassing, ", "))
	}
	return nil
}

// typeCell is "SYNCED 1a2b3c4d", "STALE 1a2b3c4d/9f8e7d6c" (sent/acked)
// or "-" when the type was never sent.
func typeCell(n *nodeStatus, url string) string {
	st := n.typeState(url)
	if st == "" {
		return ""
	}
	s, a := n.LastSent[url].Version, n.LastAck[url].Version
	if st == synced || s == a {
		return st + " " + short(s)
	}
	return st + " " + short(s) + "/" + cmpOr(short(a), "-")
}
