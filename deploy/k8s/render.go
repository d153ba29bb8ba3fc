// Package k8s renders and checks Meshop's Helm chart, deploy/helm/meshop,
// offline: with Helm's Go SDK (no helm binary, no cluster), every object
// strictly decoded with client-go's scheme. Its tests are the chart's
// offline proof (`make test`); cmd/k8s-render writes the manifests
// (`make k8s-render`).
package k8s

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/yaml"
)

// ChartPath is the chart's directory, relative to the repository root.
const ChartPath = "deploy/helm/meshop"

// Release is how the chart is rendered: the release name and namespace
// the README installs it with.
var Release = chartutil.ReleaseOptions{Name: "meshop", Namespace: "meshop", Revision: 1, IsInstall: true}

// Manifest is one rendered template file.
type Manifest struct {
	Template string // e.g. meshop/templates/apps.yaml
	YAML     string
}

// Render renders the chart in chartDir with values (nil: the defaults)
// merged over values.yaml, checked against values.schema.json, as `helm
// template` does; templates that render nothing are left out.
func Render(chartDir string, values map[string]any) ([]Manifest, error) {
	chrt, err := loader.Load(chartDir)
	if err != nil {
		return nil, err
	}
	caps := chartutil.DefaultCapabilities.Copy()
	vals, err := chartutil.ToRenderValues(chrt, values, Release, caps)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.Render(chrt, vals)
	if err != nil {
		return nil, err
	}
	var manifests []Manifest
	for name, text := range out {
		if strings.HasSuffix(name, "NOTES.txt") || strings.TrimSpace(text) == "" {
			continue
		}
		manifests = append(manifests, Manifest{Template: name, YAML: text})
	}
	sort.Slice(manifests, func(i, j int) bool { return manifests[i].Template < manifests[j].Template })
	return manifests, nil
}

// MergeValues returns over merged onto base, over winning, as a later
// `helm -f` file wins over an earlier one. Both may be changed.
func MergeValues(base, over map[string]any) map[string]any {
	return chartutil.CoalesceTables(over, base)
}

// ReadValues reads a values file (YAML).
func ReadValues(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	if err := yaml.Unmarshal(data, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// strictDecoder decodes with client-go's scheme; unknown and duplicate
// fields are errors.
var strictDecoder = serializer.NewCodecFactory(scheme.Scheme, serializer.EnableStrict).UniversalDeserializer()

// Decode splits the manifests into documents and decodes each strictly
// into its typed object (a Deployment, a Service, ...).
func Decode(manifests []Manifest) ([]runtime.Object, error) {
	var objs []runtime.Object
	for _, m := range manifests {
		r := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(m.YAML)))
		for {
			doc, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.Template, err)
			}
			if isBlank(doc) {
				continue
			}
			js, err := yaml.YAMLToJSONStrict(doc)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.Template, err)
			}
			obj, _, err := strictDecoder.Decode(js, nil, nil)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", m.Template, err)
			}
			objs = append(objs, obj)
		}
	}
	return objs, nil
}

// isBlank says whether a YAML document holds only comments and space.
func isBlank(doc []byte) bool {
	for _, line := range strings.Split(string(doc), "\n") {
		if l := strings.TrimSpace(line); l != "" && l != "---" && !strings.HasPrefix(l, "#") {
			return false
		}
	}
	return true
}

// Write writes the manifests to one file, each document under a comment
// naming its template, as `helm template` prints them.
func Write(path string, manifests []Manifest) error {
	var b bytes.Buffer
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Template, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(m.YAML), "---")))
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}
