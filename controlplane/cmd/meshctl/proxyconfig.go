package main

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
)

// configKinds are proxy-config's subcommands: the ConfigDump section
// each reads and the list in it.
var configKinds = []struct {
	name, section, list, short string
}{
	{"clusters", "ClustersConfigDump", "dynamic_active_clusters", "clusters (CDS): name, discovery type, endpoints, TLS"},
	{"listeners", "ListenersConfigDump", "dynamic_listeners", "listeners (LDS): address, filters, route configuration"},
	{"routes", "RoutesConfigDump", "dynamic_route_configs", "routes (RDS): one row per route, with match and destination"},
	{"endpoints", "EndpointsConfigDump", "dynamic_endpoint_configs", "endpoints (EDS): one row per endpoint, with its health"},
	{"secrets", "SecretsConfigDump", "dynamic_active_secrets", "secrets (SDS): certificates and roots, private keys redacted"},
}

func newProxyConfigCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:     "proxy-config",
		Aliases: []string{"pc"},
		Short:   "A node's configuration as the control plane sends it",
		Long: `proxy-config shows the configuration the control plane holds for one node
(a Consul instance ID such as order-1, or edge-1 for the edge), read from
/debug/config_dump: tables by default, the full resources with -o json|yaml.
It needs a Consul token with operator:read (--token or CONSUL_HTTP_TOKEN).
Private keys are redacted by the control plane.`,
		Example: `  meshctl proxy-config clusters order-1
  meshctl proxy-config routes edge-1
  meshctl proxy-config listeners payment-1 -o yaml`,
	})
	for _, k := range configKinds {
		cmd.AddCommand(&cobra.Command{
			Use:   k.name + " <node>",
			Short: "The node's " + k.short,
			Example: fmt.Sprintf(`  meshctl proxy-config %[1]s order-1
  meshctl proxy-config %[1]s edge-1 -o json`, k.name),
			Args:              usageArgs(cobra.ExactArgs(1)),
			ValidArgsFunction: a.completeNodes,
			RunE: func(cmd *cobra.Command, args []string) error {
				ctx, cancel := a.ctx(cmd)
				defer cancel()
				d, err := a.configDump(ctx, args[0])
				if err != nil {
					return err
				}
				items, err := d.section(k.section, k.list)
				if err != nil {
					return err
				}
				return printConfig(cmd, a.output, k.name, d, items)
			},
		})
	}
	return cmd
}

// dump is GET /debug/config_dump?node=.
type dump struct {
	Node       string            `json:"node"`
	Key        string            `json:"snapshot_key"`
	Versions   map[string]string `json:"versions"`
	ConfigDump struct {
		Configs []map[string]json.RawMessage `json:"configs"`
	} `json:"config_dump"`
}

// configDump asks each replica in turn for the node's configuration: the
// first one that has it answers.
func (a *app) configDump(ctx context.Context, node string) (*dump, error) {
	urls, err := a.ControlPlaneURLs()
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, u := range urls {
		var d dump
		err := a.get(ctx, u, "/debug/config_dump?node="+url.QueryEscape(node), true, &d)
		if err == nil {
			return &d, nil
		}
		var he *httpError
		if errors.As(err, &he) && (he.status == http.StatusUnauthorized || he.status == http.StatusForbidden) {
			return nil, err // the token is the problem, not this replica
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// section returns the resources of one ConfigDump section, unwrapped
// from their per-resource envelope (version, name).
func (d *dump) section(typ, list string) ([]map[string]any, error) {
	for _, c := range d.ConfigDump.Configs {
		var t string
		if err := json.Unmarshal(c["@type"], &t); err != nil || !strings.HasSuffix(t, "."+typ) {
			continue
		}
		var items []map[string]any
		if raw := c[list]; len(raw) > 0 {
			if err := json.Unmarshal(raw, &items); err != nil {
				return nil, fmt.Errorf("config dump %s: %w", typ, err)
			}
		}
		out := make([]map[string]any, 0, len(items))
		for _, it := range items {
			for _, k := range []string{"cluster", "endpoint_config", "route_config", "secret"} {
				if m, ok := it[k].(map[string]any); ok {
					out = append(out, m)
				}
			}
			if st, ok := it["active_state"].(map[string]any); ok {
				if m, ok := st["listener"].(map[string]any); ok {
					out = append(out, m)
				}
			}
		}
		return out, nil
	}
	return []map[string]any{}, nil
}

func printConfig(cmd *cobra.Command, format, kind string, d *dump, items []map[string]any) error {
	out := cmd.OutOrStdout()
	if format != "table" {
		for _, it := range items {
			delete(it, "@type")
		}
		return printStructured(out, format, items)
	}
	if len(items) == 0 {
		why := ""
		if kind == "secrets" {
			why = " (a proxyless gRPC node takes its certificates from its bootstrap's certificate provider, not SDS)"
		}
		fmt.Fprintf(out, "no %s for %s%s\n", kind, d.Node, why)
		return nil
	}
	switch kind {
	case "clusters":
		eps := map[string]int{}
		if es, err := d.section("EndpointsConfigDump", "dynamic_endpoint_configs"); err == nil {
			for _, e := range es {
				eps[str(e, "cluster_name")] = len(endpointRows(e))
			}
		}
		t := newTable(out, "NAME", "TYPE", "ENDPOINTS", "CONNECT TIMEOUT", "TLS", "LB POLICY")
		for _, c := range items {
			typ := cmpOr(str(c, "type"), "EDS")
			if _, ok := c["cluster_type"]; ok {
				typ = str(c, "cluster_type", "name")
			}
			n := eps[str(c, "name")]
			if la, ok := c["load_assignment"].(map[string]any); ok {
				n = len(endpointRows(la))
			}
			t.row(str(c, "name"), typ, strconv.Itoa(n), str(c, "connect_timeout"), yesNo(c["transport_socket"] != nil),
				cmpOr(str(c, "lb_policy"), "ROUND_ROBIN"))
		}
		return t.flush()
	case "listeners":
		t := newTable(out, "NAME", "ADDRESS", "PORT", "FILTERS", "ROUTE CONFIG", "TLS")
		for _, l := range items {
			addr, port := str(l, "address", "socket_address", "address"), num(l, "address", "socket_address", "port_value")
			if _, ok := l["api_listener"]; ok {
				addr, port = "(api listener)", ""
			}
			var filters, routes []string
			tls := false
			walk(l, func(k string, v any, parent map[string]any) {
				switch k {
				case "route_config_name":
					routes = appendNew(routes, fmt.Sprint(v))
				case "transport_socket":
					tls = true
				case "name":
					if s, ok := v.(string); ok && strings.HasPrefix(s, "envoy.filters.") {
						filters = appendNew(filters, strings.TrimPrefix(strings.TrimPrefix(s, "envoy.filters."), "http."))
					}
				}
			})
			if s, ok := l["route_config"]; ok && s != nil {
				routes = appendNew(routes, "(inline)")
			}
			t.row(str(l, "name"), addr, port, strings.Join(filters, ","), strings.Join(routes, ","), yesNo(tls))
		}
		return t.flush()
	case "routes":
		t := newTable(out, "ROUTE CONFIG", "VIRTUAL HOST", "DOMAINS", "ROUTE", "MATCH", "DESTINATION", "TIMEOUT")
		for _, rc := range items {
			for _, vh := range list(rc, "virtual_hosts") {
				domains := strings.Join(strs(vh, "domains"), ",")
				for _, r := range list(vh, "routes") {
					t.row(str(rc, "name"), str(vh, "name"), truncate(domains, 40), str(r, "name"), routeMatch(r), routeDest(r), routeTimeout(r))
				}
			}
		}
		return t.flush()
	case "endpoints":
		t := newTable(out, "CLUSTER", "ENDPOINT", "HEALTH", "WEIGHT", "LOCALITY")
		for _, e := range items {
			rows := endpointRows(e)
			if len(rows) == 0 {
				t.row(str(e, "cluster_name"), "(none)", "", "", "")
			}
			for _, r := range rows {
				t.row(append([]string{str(e, "cluster_name")}, r...)...)
			}
		}
		return t.flush()
	case "secrets":
		t := newTable(out, "NAME", "KIND", "SUBJECT / URI SAN", "NOT AFTER", "PRIVATE KEY")
		for _, s := range items {
			if tc, ok := s["tls_certificate"].(map[string]any); ok {
				certs := pemCerts(tc["certificate_chain"])
				subj, notAfter := "", ""
				if len(certs) > 0 {
					subj, notAfter = certName(certs[0]), certs[0].NotAfter.UTC().Format(time.RFC3339)
				}
				key := ""
				if pk, ok := tc["private_key"].(map[string]any); ok {
					key = cmpOr(str(pk, "inline_string"), "(inline bytes)")
				}
				t.row(str(s, "name"), "certificate", subj, notAfter, key)
			}
			if vc, ok := s["validation_context"].(map[string]any); ok {
				for _, c := range pemCerts(vc["trusted_ca"]) {
					t.row(str(s, "name"), "trusted CA", certName(c), c.NotAfter.UTC().Format(time.RFC3339), "")
				}
			}
		}
		return t.flush()
	}
	return fmt.Errorf("unknown kind %s", kind)
}

// endpointRows are ENDPOINT, HEALTH, WEIGHT, LOCALITY per endpoint of a
// load assignment.
func endpointRows(la map[string]any) [][]string {
	var rows [][]string
	for _, le := range list(la, "endpoints") {
		loc := strings.Trim(str(le, "locality", "region")+"/"+str(le, "locality", "zone"), "/")
		for _, ep := range list(le, "lb_endpoints") {
			addr := str(ep, "endpoint", "address", "socket_address", "address") + ":" + num(ep, "endpoint", "address", "socket_address", "port_value")
			rows = append(rows, []string{addr, cmpOr(str(ep, "health_status"), "UNKNOWN"), num(ep, "load_balancing_weight"), loc})
		}
	}
	return rows
}

func routeMatch(r map[string]any) string {
	m, _ := r["match"].(map[string]any)
	var parts []string
	switch {
	case m["prefix"] != nil:
		parts = append(parts, "prefix "+str(m, "prefix"))
	case m["path"] != nil:
		parts = append(parts, "path "+str(m, "path"))
	case m["safe_regex"] != nil:
		parts = append(parts, "regex "+str(m, "safe_regex", "regex"))
	case m["path_separated_prefix"] != nil:
		parts = append(parts, "segments "+str(m, "path_separated_prefix"))
	}
	for _, h := range list(m, "headers") {
		parts = append(parts, headerMatch(h))
	}
	return truncate(strings.Join(parts, " "), 80)
}

// headerMatch renders a HeaderMatcher: name=value, name~regex,
// name^=prefix, name present; "!" in front when inverted.
func headerMatch(h map[string]any) string {
	name, out := str(h, "name"), ""
	switch {
	case h["present_match"] != nil:
		out = name + " present"
	case str(h, "string_match", "exact") != "":
		out = name + "=" + str(h, "string_match", "exact")
	case str(h, "string_match", "prefix") != "":
		out = name + "^=" + str(h, "string_match", "prefix")
	case str(h, "string_match", "safe_regex", "regex") != "":
		out = name + "~" + str(h, "string_match", "safe_regex", "regex")
	default:
		out = name + " (match)"
	}
	if h["invert_match"] == true {
		out = "!" + out
	}
	return out
}

func routeDest(r map[string]any) string {
	if rt, ok := r["route"].(map[string]any); ok {
		if c := str(rt, "cluster"); c != "" {
			return c
		}
		var ws []string
		for _, c := range list(rt, "weighted_clusters", "clusters") {
			ws = append(ws, str(c, "name")+"="+num(c, "weight"))
		}
		return strings.Join(ws, ",")
	}
	if dr, ok := r["direct_response"].(map[string]any); ok {
		return "direct " + num(dr, "status")
	}
	if _, ok := r["redirect"]; ok {
		return "redirect"
	}
	return ""
}

// pemCerts decodes the certificates of a DataSource (inline string or
// base64 inline bytes).
func pemCerts(ds any) []*x509.Certificate {
	m, _ := ds.(map[string]any)
	data := []byte(str(m, "inline_string"))
	if b := str(m, "inline_bytes"); b != "" {
		data, _ = base64.StdEncoding.DecodeString(b)
	}
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, data = pem.Decode(data)
		if blk == nil {
			return out
		}
		if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func certName(c *x509.Certificate) string {
	if len(c.URIs) > 0 {
		return c.URIs[0].String()
	}
	return c.Subject.String()
}

// str follows keys through nested objects to a value, as text.
// routeTimeout is a route's deadline: Envoy's route timeout, or for a
// proxyless gRPC client the max_stream_duration it applies instead.
func routeTimeout(r map[string]any) string {
	if t := str(r, "route", "timeout"); t != "" {
		return t
	}
	return str(r, "route", "max_stream_duration", "max_stream_duration")
}

func str(m map[string]any, keys ...string) string {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return ""
		}
		v = mm[k]
	}
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}

func num(m map[string]any, keys ...string) string {
	s := str(m, keys...)
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return s
}

func list(m map[string]any, keys ...string) []map[string]any {
	var v any = m
	for _, k := range keys {
		mm, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = mm[k]
	}
	xs, _ := v.([]any)
	out := make([]map[string]any, 0, len(xs))
	for _, x := range xs {
		if mm, ok := x.(map[string]any); ok {
			out = append(out, mm)
		}
	}
	return out
}

func strs(m map[string]any, key string) []string {
	xs, _ := m[key].([]any)
	var out []string
	for _, x := range xs {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// walk calls f with every key and value under v, depth first.
func walk(v any, f func(k string, v any, parent map[string]any)) {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			f(k, x[k], x)
			walk(x[k], f)
		}
	case []any:
		for _, e := range x {
			walk(e, f)
		}
	}
}

func appendNew(xs []string, s string) []string {
	if slices.Contains(xs, s) {
		return xs
	}
	return append(xs, s)
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// completeNodes completes a node argument with the connected nodes'
// IDs (shell completion asks the control plane).
func (a *app) completeNodes(cmd *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	ctx, cancel := a.ctx(cmd)
	defer cancel()
	f, err := a.nodes(ctx)
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var ids []string
	for _, n := range f.nodes {
		if n.Connected {
			ids = append(ids, n.ID+"\t"+n.Cluster+" ("+n.flavour()+")")
		}
	}
	return ids, cobra.ShellCompDirectiveNoFileComp
}
