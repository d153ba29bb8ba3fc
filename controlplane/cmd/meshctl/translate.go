package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/controlplane/model"
	"github.com/meshop/meshop/controlplane/translate"
)

func newXCmd(a *app) *cobra.Command {
	cmd := group(&cobra.Command{
		Use:     "x",
		Short:   "Experimental and offline tools",
		Example: `  meshctl x translate --catalog snapshot.yaml --node order-1`,
	})
	var catalogFile, node, flavor, only string
	tr := &cobra.Command{
		Use:   "translate --catalog <file> [--node <id>]",
		Short: "Offline: a catalog snapshot (YAML) to the exact xDS resources a node would get",
		Long: `translate reads a catalog file (instances as Consul reports them, KV
policies, service-intentions entries, translation settings and a node: the
format of controlplane/translate/testdata/in/*.yaml) and prints the clusters,
endpoints, listeners and routes the control plane's translator gives the node,
with the model's problems with the input. It needs neither Consul nor the
control plane.

--node picks another node than the file's: an instance ID (a sidecar of its
service), or edge-<n> for the edge. Secrets (SDS) come from Consul's CA at run
time and are not part of the output.

-o yaml (the default here) and json print the resources; -o table lists their
names. --type prints one type's list alone, byte for byte what the golden test
keeps in testdata/out/<case>.<type>.yaml.`,
		Example: `  meshctl x translate --catalog controlplane/translate/testdata/in/mtls_sidecar.yaml
  meshctl x translate --catalog snapshot.yaml --node order-1 --type clusters
  meshctl x translate --catalog snapshot.yaml --node edge-1 -o table`,
		Args: usageArgs(cobra.NoArgs),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if catalogFile == "" {
				return usagef("x translate: --catalog <file> is required")
			}
			format := a.output
			if !cmd.Flags().Changed("output") && !cmd.Root().PersistentFlags().Changed("output") {
				format = "yaml"
			}
			var raw []byte
			var err error
			if catalogFile == "-" {
				raw, err = readAll(cmd.InOrStdin())
			} else {
				raw, err = os.ReadFile(catalogFile)
			}
			if err != nil {
				return err
			}
			cf, err := translate.ParseCatalogFile(raw)
			if err != nil {
				return fmt.Errorf("%s: %w", catalogFile, err)
			}
			n := cf.Node
			if node != "" && node != n.ID {
				n = translate.CatalogFileNode{ID: node}
				for _, in := range cf.Instances {
					if in.ID == node {
						n.Cluster = in.Service
					}
				}
				if n.Cluster == "" && len(node) >= 4 && node[:4] == "edge" {
					n.Cluster = translate.EdgeCluster
				}
			}
			if flavor != "" {
				switch flavor {
				case "envoy":
					n.Flavor = ""
				case translate.FlavorProxyless:
					n.Flavor = flavor
				default:
					return usagef("--flavor %q: want envoy or proxyless", flavor)
				}
			}
			m := model.NewBuilder(model.BuilderOptions{}).Build(cf.Snapshot())
			res, err := translate.FromScratch(m, n.TranslateNode(), cf.Config())
			if err != nil {
				return fmt.Errorf("translate node %q: %w", n.ID, err)
			}
			return printTranslation(cmd.OutOrStdout(), format, only, res.ByType(), m.Problems)
		},
	}
	tr.Flags().StringVar(&catalogFile, "catalog", "", "catalog file (YAML or JSON; - for stdin)")
	tr.Flags().StringVar(&node, "node", "", "node ID: an instance ID or edge-<n> (default: the file's node)")
	tr.Flags().StringVar(&flavor, "flavor", "", "envoy or proxyless (default: the file's node's)")
	tr.Flags().StringVar(&only, "type", "", "print only clusters, endpoints, listeners or routes")
	_ = tr.RegisterFlagCompletionFunc("type", cobra.FixedCompletions([]string{"clusters", "endpoints", "listeners", "routes"}, cobra.ShellCompDirectiveNoFileComp))
	_ = tr.RegisterFlagCompletionFunc("flavor", cobra.FixedCompletions([]string{"envoy", "proxyless"}, cobra.ShellCompDirectiveNoFileComp))
	cmd.AddCommand(tr)
	return cmd
}

var translatedTypes = []struct{ name, url string }{
	{"clusters", resource.ClusterType},
	{"endpoints", resource.EndpointType},
	{"listeners", resource.ListenerType},
	{"routes", resource.RouteType},
}

// printTranslation prints resources as the golden files hold them:
// protojson with proto field names, one list per type, in name order.
func printTranslation(out io.Writer, format, only string, byType map[resource.Type][]types.Resource, problems model.Problems) error {
	if format == "table" {
		t := newTable(out, "TYPE", "NAME")
		for _, tt := range translatedTypes {
			if only == "" || only == tt.name {
				for _, r := range byType[tt.url] {
					t.row(tt.name, cachev3.GetResourceName(r))
				}
			}
		}
		if err := t.flush(); err != nil {
			return err
		}
		for _, p := range problems {
			fmt.Fprintf(out, "problem: %s\n", p.String())
		}
		return nil
	}
	lists := map[string]json.RawMessage{}
	for _, tt := range translatedTypes {
		l, err := resourceList(byType[tt.url])
		if err != nil {
			return err
		}
		lists[tt.name] = l
	}
	var doc []byte
	if only != "" {
		l, ok := lists[only]
		if !ok {
			return usagef("--type %q: want clusters, endpoints, listeners or routes", only)
		}
		doc = l
	} else {
		if len(problems) > 0 {
			b, err := json.Marshal(problems)
			if err != nil {
				return err
			}
			lists["problems"] = b
		}
		b, err := json.Marshal(lists)
		if err != nil {
			return err
		}
		doc = b
	}
	if format == "json" {
		var v any
		if err := json.Unmarshal(doc, &v); err != nil {
			return err
		}
		return printStructured(out, "json", v)
	}
	y, err := yaml.JSONToYAML(doc)
	if err != nil {
		return err
	}
	_, err = out.Write(y)
	return err
}

// resourceList is the JSON list of resources, as the golden test renders
// them.
func resourceList(rs []types.Resource) (json.RawMessage, error) {
	list := []json.RawMessage{}
	for _, r := range rs {
		b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(r)
		if err != nil {
			return nil, err
		}
		list = append(list, b)
	}
	return json.Marshal(list)
}

func readAll(r io.Reader) ([]byte, error) { return io.ReadAll(io.LimitReader(r, 64<<20)) }
