package k8s

import (
	"strings"
	"testing"
)

// TestBadValuesFailTheRender: values.schema.json (and the templates'
// own checks) refuse bad values with a message naming the key.
func TestBadValuesFailTheRender(t *testing.T) {
	secretsWithout := func(key string) map[string]any {
		vals := externalSecretValues()
		delete(vals, key)
		return map[string]any{"secrets": map[string]any{"existingSecret": "", "values": vals}}
	}
	cases := []struct {
		name   string
		values map[string]any
		want   []string // all in the error
	}{
		{"unknown top-level key", map[string]any{"replicaCount": 3}, []string{"replicaCount"}},
		{"unknown nested key", map[string]any{"services": map[string]any{"order": map[string]any{"replica": 3}}}, []string{"/services/order", "replica"}},
		{"unknown service", map[string]any{"services": map[string]any{"inventory": map[string]any{"replicas": 1}}}, []string{"/services", "inventory"}},
		{"negative app replicas", map[string]any{"services": map[string]any{"order": map[string]any{"replicas": -1}}}, []string{"/services/order/replicas"}},
		{"negative control plane replicas", map[string]any{"controlplane": map[string]any{"replicas": -2}}, []string{"/controlplane/replicas"}},
		{"negative edge replicas", map[string]any{"edge": map[string]any{"replicas": -1}}, []string{"/edge/replicas"}},
		{"missing database URL", secretsWithout("order-database-url"), []string{"/secrets/values", "order-database-url"}},
		{"missing key encryption key", secretsWithout("auth-key-encryption-key"), []string{"/secrets/values", "auth-key-encryption-key"}},
		{"no secret at all", map[string]any{"secrets": map[string]any{"existingSecret": ""}}, []string{"/secrets/values", "payment-nats-password"}},
		{"database URL not PostgreSQL", map[string]any{"secrets": map[string]any{"existingSecret": "", "values": map[string]any{"user-database-url": "mysql://x"}}}, []string{"/secrets/values/user-database-url"}},
		{"unknown mesh mode", map[string]any{"mesh": map[string]any{"mode": "ambient"}}, []string{"/mesh/mode"}},
		{"HPA maximum below replicas", map[string]any{"services": map[string]any{"payment": map[string]any{"replicas": 5, "autoscaling": map[string]any{"maxReplicas": 3}}}}, []string{"services.payment.autoscaling.maxReplicas", "services.payment.replicas"}},
		{"zero replicas with an HPA", map[string]any{"services": map[string]any{"user": map[string]any{"replicas": 0}}}, []string{"services.user.replicas"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Render(chartDir(t), tc.values)
			if err == nil {
				t.Fatalf("rendered; want an error naming %v", tc.want)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not name %q:\n%v", w, err)
				}
			}
		})
	}
	// The same values without the fault render: the cases fail for
	// their fault only.
	if _, err := Render(chartDir(t), map[string]any{"services": map[string]any{"user": map[string]any{"replicas": 0, "autoscaling": map[string]any{"enabled": false}}}}); err != nil {
		t.Errorf("zero replicas without an HPA: %v", err)
	}
}
