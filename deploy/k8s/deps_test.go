package k8s

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/localenv"
)

// readYAML reads a YAML file of the repository into v.
func readYAML(t *testing.T, rel string, v any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot(t), rel))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, v); err != nil {
		t.Fatalf("%s: %v", rel, err)
	}
}

// composeImage is the image docker-compose.yml runs service name with.
func composeImage(t *testing.T, name string) string {
	t.Helper()
	var compose struct {
		Services map[string]struct{ Image string }
	}
	readYAML(t, "docker-compose.yml", &compose)
	return compose.Services[name].Image
}

// TestNATSValues: the NATS chart's values give each service its own
// user with exactly localenv.NATSServicePermissions (compose's nats.conf
// comes from the same), its password from the key of meshop-secrets the
// app reads, JetStream on, and compose's image.
func TestNATSValues(t *testing.T) {
	type perms struct {
		Publish   struct{ Allow []string }
		Subscribe struct{ Allow []string }
	}
	var v struct {
		Container struct {
			Image struct{ Repository, Tag string }
			Env   map[string]struct {
				ValueFrom struct {
					SecretKeyRef struct{ Name, Key string }
				}
			}
		}
		Config struct {
			Jetstream struct{ Enabled bool }
			Merge     struct {
				Authorization struct {
					Users []struct {
						User, Password string
						Permissions    perms
					}
				}
			}
		}
	}
	readYAML(t, "deploy/helm/deps/nats-values.yaml", &v)
	if !v.Config.Jetstream.Enabled {
		t.Errorf("JetStream off")
	}
	if got, want := v.Container.Image.Repository+":"+v.Container.Image.Tag, composeImage(t, "nats"); got != want {
		t.Errorf("NATS image %s, compose runs %s", got, want)
	}
	users := v.Config.Merge.Authorization.Users
	if len(users) != len(services) {
		t.Fatalf("%d NATS users, want one per service", len(users))
	}
	for i, svc := range services {
		u := users[i]
		variable := strings.ToUpper(svc) + "_NATS_PASSWORD"
		if u.User != svc || u.Password != "<< $"+variable+" >>" {
			t.Errorf("user %d: %s with password %q, want %s with $%s", i, u.User, u.Password, svc, variable)
		}
		want := localenv.NATSServicePermissions(svc)
		if !slices.Equal(u.Permissions.Publish.Allow, want.Publish.Allow) || !slices.Equal(u.Permissions.Subscribe.Allow, want.Subscribe.Allow) {
			t.Errorf("%s: NATS permissions %+v, want localenv.NATSServicePermissions", svc, u.Permissions)
		}
		ref := v.Container.Env[variable].ValueFrom.SecretKeyRef
		if ref.Name != "meshop-secrets" || ref.Key != svc+"-nats-password" {
			t.Errorf("%s comes from %s/%s, want meshop-secrets/%s-nats-password (what the app reads)", variable, ref.Name, ref.Key, svc)
		}
	}
}

// TestConsulValues: HashiCorp's chart as Meshop needs it: Consul 1.16.3
// (the chart's images.consul too), client agents, ACLs and TLS on (the
// agents' certificates signed by the CA the pods trust), its injector
// off; and the Secrets the chart reads are the ones it makes.
func TestConsulValues(t *testing.T) {
	var v struct {
		Global struct {
			Name, Image string
			TLS         struct{ Enabled, EnableAutoEncrypt, HTTPSOnly bool } `json:"tls"`
			ACLs        struct{ ManageSystemACLs bool }                      `json:"acls"`
		}
		Client        struct{ Enabled bool }
		ConnectInject struct{ Enabled bool }
		Server        struct{ ExtraConfig string }
	}
	readYAML(t, "deploy/helm/deps/consul-values.yaml", &v)
	chart, err := ReadValues(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	images := chart["images"].(map[string]any)
	if v.Global.Image != "hashicorp/consul:1.16.3" || images["consul"] != v.Global.Image {
		t.Errorf("Consul image %s, the chart's %v; want hashicorp/consul:1.16.3 for both", v.Global.Image, images["consul"])
	}
	if !v.Client.Enabled || v.ConnectInject.Enabled {
		t.Errorf("client agents %v, connect injector %v: want agents on, injector off", v.Client.Enabled, v.ConnectInject.Enabled)
	}
	// The agents' certificates must come from the CA the pods trust
	// (consul-ca-cert), not auto-encrypt's Connect CA.
	if !v.Global.TLS.Enabled || v.Global.TLS.EnableAutoEncrypt || !v.Global.TLS.HTTPSOnly || !v.Global.ACLs.ManageSystemACLs {
		t.Errorf("TLS %+v ACLs %+v: want TLS (HTTPS only, agents' certificates from the chart's CA) and managed ACLs", v.Global.TLS, v.Global.ACLs)
	}
	if !strings.Contains(v.Server.ExtraConfig, `"connect": {"enabled": true}`) {
		t.Errorf("the servers' Connect CA is not on")
	}
	consul := chart["consul"].(map[string]any)
	for key, want := range map[string]string{"caSecret": v.Global.Name + "-ca-cert", "bootstrapTokenSecret": v.Global.Name + "-bootstrap-acl-token"} {
		if got := consul[key].(map[string]any)["name"]; got != want {
			t.Errorf("consul.%s.name %v, the Consul chart makes %s", key, got, want)
		}
	}
}

// TestDependencyPinsAgree: README, the values files and e2e.sh install
// the same chart versions.
func TestDependencyPinsAgree(t *testing.T) {
	root := repoRoot(t)
	e2e, err := os.ReadFile(filepath.Join(root, "deploy/helm/e2e.sh"))
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for name, file := range map[string]string{"CONSUL": "consul-values.yaml", "NATS": "nats-values.yaml", "JAEGER": "jaeger-values.yaml"} {
		m := regexp.MustCompile(name + `_CHART_VERSION=(\S+)`).FindSubmatch(e2e)
		if m == nil {
			t.Errorf("e2e.sh pins no %s_CHART_VERSION", name)
			continue
		}
		install := "--version " + string(m[1]) + " -n meshop -f deploy/helm/deps/" + file
		values, err := os.ReadFile(filepath.Join(root, "deploy/helm/deps", file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(values), install) || !strings.Contains(string(readme), install) {
			t.Errorf("%s: README and %s must install with %q (e2e.sh's pin)", name, file, install)
		}
	}
}

// TestJaegerValues: the Jaeger chart runs compose's image with compose's
// configuration, and the Meshop chart sends OTLP to its Service (named
// after the release, jaeger) on the configuration's OTLP gRPC port.
func TestJaegerValues(t *testing.T) {
	var jaeger struct {
		Jaeger struct {
			Image struct{ Repository, Tag string }
		}
		Userconfig map[string]any
	}
	readYAML(t, "deploy/helm/deps/jaeger-values.yaml", &jaeger)
	if got, want := jaeger.Jaeger.Image.Repository+":"+jaeger.Jaeger.Image.Tag, composeImage(t, "jaeger"); got != want {
		t.Errorf("Jaeger image %s, compose runs %s", got, want)
	}
	var compose map[string]any
	readYAML(t, "observability/jaeger/config-compose.yaml", &compose)
	if !reflect.DeepEqual(jaeger.Userconfig, compose) {
		t.Errorf("jaeger-values.yaml's userconfig is not observability/jaeger/config-compose.yaml")
	}
	chart, err := ReadValues(filepath.Join(chartDir(t), "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	tracing := chart["tracing"].(map[string]any)
	if tracing["otlpEndpoint"] != "http://jaeger:4317" || tracing["collectorAddr"] != "jaeger:4317" {
		t.Errorf("the chart sends OTLP to %v and %v, want the Jaeger release's Service jaeger:4317", tracing["otlpEndpoint"], tracing["collectorAddr"])
	}
}
