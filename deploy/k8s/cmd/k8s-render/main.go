// Command k8s-render writes the manifests of Meshop's Helm chart
// (`make k8s-render`), rendered with Helm's Go SDK, no helm binary or
// cluster needed: one file per variant, each object strictly decoded with
// client-go's scheme first.
//
//	k8s-render [-chart deploy/helm/meshop] [-out .k8s] [-f values.yaml]...
//
// Without -f it writes the default values (meshop.yaml) and proxyless
// mode (meshop-proxyless.yaml); with -f, one file, meshop.yaml, of the
// default values with those files merged over them in order.
package main

import (
	"flag"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/meshop/meshop/deploy/k8s"
)

// valueFiles collects repeated -f flags.
type valueFiles []string

func (v *valueFiles) String() string     { return strings.Join(*v, ",") }
func (v *valueFiles) Set(s string) error { *v = append(*v, s); return nil }

func main() {
	chart := flag.String("chart", k8s.ChartPath, "the chart's directory")
	out := flag.String("out", ".k8s", "where the manifests go")
	var files valueFiles
	flag.Var(&files, "f", "a values file merged over the chart's (repeatable)")
	flag.Parse()
	if err := run(*chart, *out, files); err != nil {
		fmt.Fprintln(os.Stderr, "k8s-render:", err)
		os.Exit(1)
	}
}

func run(chart, out string, files []string) error {
	variants := map[string]map[string]any{
		"meshop.yaml":           nil,
		"meshop-proxyless.yaml": {"mesh": map[string]any{"mode": "proxyless"}},
	}
	if len(files) > 0 {
		merged := map[string]any{}
		for _, f := range files {
			v, err := k8s.ReadValues(f)
			if err != nil {
				return err
			}
			merged = k8s.MergeValues(merged, v)
		}
		variants = map[string]map[string]any{"meshop.yaml": merged}
	}
	for _, name := range slices.Sorted(maps.Keys(variants)) {
		manifests, err := k8s.Render(chart, variants[name])
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		objs, err := k8s.Decode(manifests)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		path := filepath.Join(out, name)
		if err := k8s.Write(path, manifests); err != nil {
			return err
		}
		fmt.Printf("k8s-render: %s (%d objects)\n", path, len(objs))
	}
	return nil
}
