package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/model"
)

func newDescribeCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:     "describe",
		Short:   "Everything about one thing of the mesh",
		Example: `  meshctl describe service payment`,
	})
	cmd.AddCommand(&cobra.Command{
		Use:   "service <name>",
		Short: "A service: instances and health, upstreams, callers, policy, intentions, edge prefixes",
		Long: `describe service gathers what Consul and the control plane know of a service:
its instances and their health (Consul), the upstreams its instances declare
(mesh_upstreams), the services that call it, the policy in force and where it
comes from (mesh/policy/<name>, the last good one, or the defaults), its
intentions (service-intentions config entries, its own and "*"), the public
prefixes the edge routes to it, and the control plane's problems with it.
A service with no passing instance is flagged loudly: its callers get no
endpoint.`,
		Example: `  meshctl describe service payment
  meshctl describe service order -o yaml`,
		Args:              usageArgs(cobra.ExactArgs(1)),
		ValidArgsFunction: a.completeServices,
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, cancel := a.ctx(cmd)
			defer cancel()
			d, err := a.describeService(ctx, args[0])
			if d == nil {
				return err
			}
			if a.output != "table" {
				if perr := printStructured(cmd.OutOrStdout(), a.output, d); perr != nil {
					return perr
				}
			} else {
				printService(cmd, d)
			}
			return err
		},
	})
	return cmd
}

// serviceView is describe service's JSON/YAML.
type serviceView struct {
	Name              string                     `json:"name"`
	Instances         []instanceView             `json:"instances"`
	PassingInstances  int                        `json:"passing_instances"`
	DeclaredUpstreams []string                   `json:"declared_upstreams"`
	Callers           []string                   `json:"callers"`
	Policy            json.RawMessage            `json:"policy,omitempty"`
	PolicySource      string                     `json:"policy_source,omitempty"`
	PolicyRejected    string                     `json:"policy_rejected,omitempty"`
	GRPCNotHonoured   []string                   `json:"grpc_not_honoured,omitempty"`
	Intentions        []model.IntentionSource    `json:"intentions"`
	IntentionEntries  map[string]json.RawMessage `json:"intention_entries,omitempty"`
	EdgePrefixes      []string                   `json:"edge_prefixes"`
	Problems          []model.Problem            `json:"problems,omitempty"`
	Meshed            bool                       `json:"meshed"`
}

type instanceView struct {
	ID        string   `json:"id"`
	Node      string   `json:"node"`
	Address   string   `json:"address"`
	Version   string   `json:"version,omitempty"`
	Status    string   `json:"status"`
	Upstreams []string `json:"upstreams,omitempty"`
	Failing   []string `json:"failing_checks,omitempty"`
}

// meshModel is the part of GET /debug/model describe reads.
type meshModel struct {
	Services map[string]struct {
		Upstreams       []string        `json:"upstreams"`
		PublicPrefixes  []string        `json:"public_prefixes"`
		Policy          json.RawMessage `json:"policy"`
		GRPCNotHonoured []string        `json:"grpc_not_honoured"`
	} `json:"services"`
	Routes   []model.PublicRoute           `json:"routes"`
	Policies map[string]model.PolicyStatus `json:"policies"`
	Problems []model.Problem               `json:"problems"`
}

// describeService returns what it could gather, and an error naming what
// it could not (Consul or the control plane unreachable).
func (a *app) describeService(ctx context.Context, name string) (*serviceView, error) {
	consul, err := a.Consul()
	if err != nil {
		return nil, err
	}
	d := &serviceView{Name: name, DeclaredUpstreams: []string{}, Callers: []string{}, EdgePrefixes: []string{}, Instances: []instanceView{}}
	q := (&api.QueryOptions{}).WithContext(ctx)
	entries, _, err := consul.Health().Service(name, "", false, q)
	if err != nil {
		return nil, fmt.Errorf("consul %s: %s", a.consulAddr, oneLine(err.Error()))
	}
	for _, e := range entries {
		addr := cmpOr(e.Service.Address, e.Node.Address)
		iv := instanceView{ID: e.Service.ID, Node: e.Node.Node, Address: addr + ":" + strconv.Itoa(e.Service.Port),
			Version: e.Service.Meta[model.MetaVersion], Status: e.Checks.AggregatedStatus()}
		for _, u := range strings.Split(e.Service.Meta[model.MetaUpstreams], ",") {
			if u = strings.TrimSpace(u); u != "" {
				iv.Upstreams = append(iv.Upstreams, u)
				d.DeclaredUpstreams = appendNew(d.DeclaredUpstreams, u)
			}
		}
		for _, c := range e.Checks {
			if c.Status != api.HealthPassing {
				iv.Failing = append(iv.Failing, fmt.Sprintf("%s %s: %s", c.Name, c.Status, truncate(c.Output, 80)))
			}
		}
		if iv.Status == api.HealthPassing {
			d.PassingInstances++
		}
		d.Instances = append(d.Instances, iv)
	}
	slices.Sort(d.DeclaredUpstreams)
	if len(entries) == 0 {
		services, _, err := consul.Catalog().Services(q)
		if err != nil {
			return nil, fmt.Errorf("consul %s: %s", a.consulAddr, oneLine(err.Error()))
		}
		if _, ok := services[name]; !ok {
			return nil, fmt.Errorf("no service %q in Consul (meshctl describe service takes a Consul service name; the token needs service:read)", name)
		}
	}

	// Intentions: the service's own entry, and the wildcard's.
	d.IntentionEntries = map[string]json.RawMessage{}
	var exact, wildcard *model.Intentions
	for _, dest := range []string{name, model.Wildcard} {
		entry, _, err := consul.ConfigEntries().Get(catalog.IntentionsKind, dest, q)
		if err != nil {
			if strings.Contains(err.Error(), "404") {
				continue
			}
			return nil, fmt.Errorf("consul %s: intentions of %s: %s", a.consulAddr, dest, oneLine(err.Error()))
		}
		raw, err := json.Marshal(entry)
		if err != nil {
			return nil, err
		}
		d.IntentionEntries[dest] = raw
		ints := intentionsOf(entry)
		if dest == name {
			exact = ints
		} else {
			wildcard = ints
		}
	}
	d.Intentions = model.EffectiveSources(exact, wildcard)

	// The control plane's view: callers, policy, prefixes, problems.
	urls, err := a.ControlPlaneURLs()
	if err != nil {
		return d, err
	}
	var m meshModel
	var errs []error
	got := false
	for _, u := range urls {
		if err := a.get(ctx, u, "/debug/model", false, &m); err != nil {
			errs = append(errs, err)
			continue
		}
		got = true
		break
	}
	if !got {
		return d, fmt.Errorf("callers, policy and prefixes unknown: %w", errors.Join(errs...))
	}
	svc, meshed := m.Services[name]
	d.Meshed = meshed
	for caller, s := range m.Services {
		if slices.Contains(s.Upstreams, name) {
			d.Callers = append(d.Callers, caller)
		}
	}
	slices.Sort(d.Callers)
	for _, r := range m.Routes {
		if r.Service == name {
			d.EdgePrefixes = append(d.EdgePrefixes, r.Prefix)
		}
	}
	slices.Sort(d.EdgePrefixes)
	if meshed {
		d.Policy, d.GRPCNotHonoured = svc.Policy, svc.GRPCNotHonoured
		d.PolicySource = string(model.PolicyDefault)
		if st, ok := m.Policies[name]; ok {
			d.PolicySource, d.PolicyRejected = string(st.Source), st.Rejected
		}
	}
	for _, p := range m.Problems {
		if p.Service == name {
			d.Problems = append(d.Problems, p)
		}
	}
	return d, nil
}

func printService(cmd *cobra.Command, d *serviceView) {
	out := cmd.OutOrStdout()
	fmt.Fprintf(out, "Service:     %s\n", d.Name)
	switch {
	case len(d.Instances) == 0:
		fmt.Fprintf(out, "\n!!! NO INSTANCE: %s is not registered in Consul; its callers get no endpoint !!!\n", d.Name)
	case d.PassingInstances == 0:
		fmt.Fprintf(out, "\n!!! NO PASSING INSTANCE: all %d instances of %s fail their checks; its callers get no endpoint !!!\n", len(d.Instances), d.Name)
	}
	fmt.Fprintf(out, "\nInstances (%d of %d passing):\n", d.PassingInstances, len(d.Instances))
	t := newTable(indent(out), "ID", "ADDRESS", "NODE", "VERSION", "STATUS", "FAILING CHECKS")
	for _, in := range d.Instances {
		t.row(in.ID, in.Address, in.Node, in.Version, strings.ToUpper(in.Status), strings.Join(in.Failing, "; "))
	}
	_ = t.flush()
	fmt.Fprintf(out, "\nUpstreams:   %s\n", listOrNone(d.DeclaredUpstreams))
	fmt.Fprintf(out, "Callers:     %s\n", listOrNone(d.Callers))
	fmt.Fprintf(out, "Edge:        %s\n", listOrNone(prefixed("/api", d.EdgePrefixes)))
	if d.Policy != nil {
		src := d.PolicySource
		switch model.PolicySource(src) {
		case model.PolicyKV:
			src = "mesh/policy/" + d.Name
		case model.PolicyDefault:
			src = "defaults (no mesh/policy/" + d.Name + ")"
		case model.PolicyLastGood:
			src = "last good (mesh/policy/" + d.Name + " is rejected: " + d.PolicyRejected + ")"
		}
		fmt.Fprintf(out, "\nPolicy:      %s\n", src)
		var pretty map[string]any
		if json.Unmarshal(d.Policy, &pretty) == nil {
			_ = printStructured(indent(out), "yaml", pretty)
		}
		for _, g := range d.GRPCNotHonoured {
			fmt.Fprintf(out, "  (not applied by proxyless gRPC clients: %s)\n", g)
		}
	} else if !d.Meshed {
		fmt.Fprintf(out, "\nPolicy:      none: %s is not in the mesh (no instance with mesh_* meta)\n", d.Name)
	}
	fmt.Fprintf(out, "\nIntentions (first match decides; no match: deny):\n")
	if len(d.Intentions) == 0 {
		fmt.Fprintf(out, "  none: every caller is denied\n")
	} else {
		t := newTable(indent(out), "SOURCE", "ACTION", "PERMISSIONS")
		for _, s := range d.Intentions {
			var perms []string
			for _, p := range s.Permissions {
				perms = append(perms, string(p.Action)+" "+httpMatch(p.HTTP))
			}
			t.row(s.Name, string(s.Action), strings.Join(perms, "; "))
		}
		_ = t.flush()
	}
	if len(d.Problems) > 0 {
		fmt.Fprintf(out, "\nProblems:\n")
		for _, p := range d.Problems {
			fmt.Fprintf(out, "  %s\n", p.String())
		}
	}
}

// intentionsOf is a Consul service-intentions entry in the model's terms
// (exact sources sorted first, then "*"), for EffectiveSources.
func intentionsOf(e api.ConfigEntry) *model.Intentions {
	si, ok := e.(*api.ServiceIntentionsConfigEntry)
	if !ok {
		return nil
	}
	out := &model.Intentions{Destination: si.Name}
	var star []model.IntentionSource
	for _, s := range si.Sources {
		src := model.IntentionSource{Name: s.Name, Action: model.IntentionAction(s.Action)}
		for _, p := range s.Permissions {
			perm := model.IntentionPermission{Action: model.IntentionAction(p.Action)}
			if h := p.HTTP; h != nil {
				perm.HTTP = model.HTTPMatch{PathExact: h.PathExact, PathPrefix: h.PathPrefix, PathRegex: h.PathRegex, Methods: h.Methods}
				for _, hd := range h.Header {
					perm.HTTP.Headers = append(perm.HTTP.Headers, model.HeaderMatch{Name: hd.Name, Present: hd.Present, Exact: hd.Exact,
						Prefix: hd.Prefix, Suffix: hd.Suffix, Regex: hd.Regex, Invert: hd.Invert})
				}
			}
			src.Permissions = append(src.Permissions, perm)
		}
		if s.Name == model.Wildcard {
			star = append(star, src)
		} else {
			out.Sources = append(out.Sources, src)
		}
	}
	slices.SortFunc(out.Sources, func(a, b model.IntentionSource) int { return strings.Compare(a.Name, b.Name) })
	out.Sources = append(out.Sources, star...)
	return out
}

func httpMatch(m model.HTTPMatch) string {
	b, err := json.Marshal(m)
	if err != nil {
		return "?"
	}
	return string(b)
}

func listOrNone(xs []string) string {
	if len(xs) == 0 {
		return "(none)"
	}
	return strings.Join(xs, ", ")
}

func prefixed(p string, xs []string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = p + x
	}
	return out
}

// indent writes every line two spaces in.
func indent(w interface{ Write([]byte) (int, error) }) *indenter {
	return &indenter{w: w, bol: true}
}

type indenter struct {
	w   interface{ Write([]byte) (int, error) }
	bol bool
}

func (i *indenter) Write(p []byte) (int, error) {
	for _, b := range p {
		if i.bol {
			if _, err := i.w.Write([]byte("  ")); err != nil {
				return 0, err
			}
		}
		if _, err := i.w.Write([]byte{b}); err != nil {
			return 0, err
		}
		i.bol = b == '\n'
	}
	return len(p), nil
}

// completeServices completes a service argument with Consul's services.
func (a *app) completeServices(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	consul, err := a.Consul()
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	services, _, err := consul.Catalog().Services((&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names := make([]string, 0, len(services))
	for s := range services {
		names = append(names, s)
	}
	slices.Sort(names)
	return names, cobra.ShellCompDirectiveNoFileComp
}
