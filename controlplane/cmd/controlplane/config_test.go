package main

import (
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, c config)
		wantErr []string
	}{
		{name: "defaults", check: func(t *testing.T, c config) {
			if c.XDSAddr != ":18000" || c.DebugAddr != ":18080" || c.Quiet != 100*time.Millisecond || c.MaxDelay != time.Second ||
				c.Translate.InboundPort != 15006 || c.Translate.OutboundPort != 15001 || c.Translate.EdgePort != 8080 ||
				c.ConsulAddr != "127.0.0.1:8500" || c.ConsulSettle != 15*time.Second || !c.Translate.EdgeTLS ||
				c.Translate.EdgeTLSFile != "/etc/meshop/tls/edge-https-sds.yaml" || !c.Translate.MTLS || !c.XDSTLS ||
				c.Translate.ExposePort != 15021 || c.XDSTokenTTL != 30*time.Second {
				t.Errorf("defaults = %+v", c)
			}
		}},
		{name: "Consul over HTTPS, with its CA and a token file", env: map[string]string{
			"CONSUL_HTTP_ADDR": "https://consul:8501", "CONSUL_CACERT": "/consul/ca/ca.pem", "MESH_MTLS": "false", "XDS_TLS": "false"},
			check: func(t *testing.T, c config) {
				conn := c.consul().Config()
				if conn.Scheme != "https" || conn.Address != "consul:8501" || conn.TLSConfig.CAFile != "/consul/ca/ca.pem" || c.Translate.MTLS || c.XDSTLS {
					t.Errorf("config %+v, Consul %s://%s CA %q", c, conn.Scheme, conn.Address, conn.TLSConfig.CAFile)
				}
			}},
		{name: "env, then flags override", args: []string{"-debounce-quiet", "50ms", "-cors-origins", "https://a.example, https://b.example"},
			env: map[string]string{"DEBOUNCE_QUIET": "20ms", "DEBOUNCE_MAX": "2s", "MESH_COLLECTOR_ADDR": "jaeger:4317", "MESH_EDGE_TLS": "false"},
			check: func(t *testing.T, c config) {
				if c.Quiet != 50*time.Millisecond || c.MaxDelay != 2*time.Second || c.Translate.CollectorAddress != "jaeger:4317" || c.Translate.EdgeTLS {
					t.Errorf("config = %+v", c)
				}
				if diff := cmp.Diff([]string{"https://a.example", "https://b.example"}, c.Translate.CORSOrigins); diff != "" {
					t.Errorf("origins (-want +got):\n%s", diff)
				}
			}},
		{name: "every bad value reported at once",
			env:     map[string]string{"MESH_INBOUND_PORT": "x", "DEBOUNCE_MAX": "1ms", "MESH_EDGE_RATE_LIMIT_INTERVAL": "10ms", "CONSUL_HTTP_ADDR": "consul", "MESH_EDGE_TLS": "yes", "MESH_EDGE_TLS_FILE": "tls/sds.yaml"},
			wantErr: []string{"MESH_INBOUND_PORT", "DEBOUNCE_MAX", "MESH_EDGE_RATE_LIMIT_INTERVAL", "CONSUL_HTTP_ADDR", "MESH_EDGE_TLS", "MESH_EDGE_TLS_FILE"}},
		{name: "same port twice", env: map[string]string{"MESH_OUTBOUND_PORT": "15006"}, wantErr: []string{"both 15006"}},
		{name: "stray argument", args: []string{"serve"}, wantErr: []string{"unexpected arguments"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := loadConfig(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatal("want an error")
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not mention %s", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, c)
		})
	}
}

// TestREADMEDocumentsEverySetting keeps the configuration table in
// controlplane/README.md in step with the code.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	for _, s := range settings() {
		def := "`" + s.def + "`"
		if s.def == "" {
			def = "(none)"
		}
		row := "| `" + s.env + "` | `-" + s.flag + "` | " + def + " |"
		if !strings.Contains(readme, row) {
			t.Errorf("README.md has no row starting %s", row)
		}
	}
}
