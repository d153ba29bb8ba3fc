package envoybootstrap

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

const token = "6f1c9a52-3e0b-4d7a-9b8e-2c5d4e6f7a81"

// sidecar is envoy/sidecar-delta.yaml with the token in place.
func sidecar(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "envoy", "sidecar-delta.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(string(raw), "@CONSUL_TOKEN@", token)
}

var sidecarWant = Want{APIType: corev3.ApiConfigSource_DELTA_GRPC, AdminPort: 15000, Sidecar: true, Token: token}

// TestCheckFindsEachBreak: the repository's sidecar bootstrap passes, and
// each break of a rule is reported.
func TestCheckFindsEachBreak(t *testing.T) {
	good := sidecar(t)
	b, err := Parse([]byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if problems := Check(b, sidecarWant); len(problems) != 0 {
		t.Fatalf("the repository's sidecar bootstrap breaks rules: %v", problems)
	}
	breaks := map[string]func(string) string{
		"admin off loopback": func(s string) string {
			return strings.Replace(s, "address: 127.0.0.1\n      port_value: 15000\n\noverload", "address: 0.0.0.0\n      port_value: 15000\n\noverload", 1)
		},
		"control plane elsewhere": func(s string) string { return strings.Replace(s, "address: controlplane", "address: elsewhere", 1) },
		"another token":           func(s string) string { return strings.Replace(s, `value: "`+token, `value: "x`, 1) },
		"SotW":                    func(s string) string { return strings.Replace(s, "api_type: DELTA_GRPC", "api_type: GRPC", 1) },
		"any SAN":                 func(s string) string { return strings.Replace(s, "svc/controlplane$", "svc/.*$", 1) },
		"node id in the file":     func(s string) string { return strings.Replace(s, "node:\n", "node:\n  id: order-1\n", 1) },
	}
	for name, mutate := range breaks {
		t.Run(name, func(t *testing.T) {
			bad := mutate(good)
			if bad == good {
				t.Fatal("the mutation changed nothing")
			}
			b, err := Parse([]byte(bad))
			if err != nil {
				t.Fatal(err)
			}
			if problems := Check(b, sidecarWant); len(problems) == 0 {
				t.Errorf("no problem reported")
			}
		})
	}
}

// TestParseIsStrict: unknown and deprecated fields and invalid values fail.
func TestParseIsStrict(t *testing.T) {
	good := sidecar(t)
	for name, bad := range map[string]string{
		"unknown field":    strings.Replace(good, "node:\n", "node:\n  colour: blue\n", 1),
		"deprecated field": strings.Replace(good, "connect_timeout: 1s\n      load_assignment:\n        cluster_name: xds_cluster", "connect_timeout: 1s\n      hosts: []\n      load_assignment:\n        cluster_name: xds_cluster", 1),
		"invalid value":    strings.Replace(good, "port_value: 15090", "port_value: 99999", 1),
		"invalid Any":      strings.Replace(good, "stat_prefix: prometheus", "stat_prefix: \"\"", 1),
	} {
		if bad == good {
			t.Errorf("%s: the mutation changed nothing", name)
			continue
		}
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s: parsed", name)
		}
	}
}
