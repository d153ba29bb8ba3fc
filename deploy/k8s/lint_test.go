package k8s

import (
	"testing"

	"helm.sh/helm/v3/pkg/action"
)

// TestLint: `helm lint --strict` through the SDK finds nothing, not even
// an informational note, for the defaults and every variant.
func TestLint(t *testing.T) {
	for _, v := range variants() {
		t.Run(v.name, func(t *testing.T) {
			lint := action.NewLint()
			lint.Strict = true
			lint.Namespace = Release.Namespace
			res := lint.Run([]string{chartDir(t)}, v.values)
			for _, err := range res.Errors {
				t.Errorf("lint error: %v", err)
			}
			for _, msg := range res.Messages {
				t.Errorf("lint: %s", msg)
			}
		})
	}
}
