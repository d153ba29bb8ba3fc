package app

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/services/kit/config"
	"github.com/meshop/meshop/services/kit/rpc"
	"github.com/meshop/meshop/services/kit/workload"
)

func TestLoadSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(config.FromMap(map[string]string{"MESH_MODE": "sidecar"}), "order")
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPAddr != "127.0.0.1:8080" || s.GRPCAddr != "127.0.0.1:9090" || s.CallTimeout != 2*time.Second || s.DatabaseURL != "sqlite:order.db" ||
		!strings.HasPrefix(s.InstanceID, "order-") || s.Version != "v1" {
		t.Errorf("defaults: %+v", s)
	}
}

func TestLoadSettingsNamesEveryBadVariable(t *testing.T) {
	_, err := LoadSettings(config.FromMap(map[string]string{
		"HTTP_ADDR": "8080", "GRPC_ADDR": "9090", "MESH_CALL_TIMEOUT": "soon", "LOG_LEVEL": "loud", "OTEL_TRACES_SAMPLER_ARG": "2",
	}), "order")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, v := range []string{"MESH_MODE", "HTTP_ADDR", "GRPC_ADDR", "MESH_CALL_TIMEOUT", "LOG_LEVEL", "OTEL_TRACES_SAMPLER_ARG"} {
		if !strings.Contains(err.Error(), "config: "+v+":") {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}

func TestProxylessModeRefusesABootstrapForAnotherInstance(t *testing.T) {
	path := filepath.Join(t.TempDir(), "bootstrap.json")
	if err := rpc.WriteBootstrap(path, rpc.NewBootstrap("127.0.0.1:18000", "order-1", "order", "token", workload.FilesIn(t.TempDir()))); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"MESH_MODE": "proxyless", "GRPC_XDS_BOOTSTRAP": path, "INSTANCE_ID": "order-1"}
	if _, err := LoadSettings(config.FromMap(env), "order"); err != nil {
		t.Fatalf("the instance's own bootstrap: %v", err)
	}
	env["INSTANCE_ID"] = "order-2"
	_, err := LoadSettings(config.FromMap(env), "order")
	if err == nil || strings.Count(err.Error(), "\n") > 0 || !strings.Contains(err.Error(), `node.id is "order-1", want the instance ID "order-2"`) {
		t.Errorf("another instance's bootstrap: got %v, want one line naming node.id", err)
	}
	delete(env, "GRPC_XDS_BOOTSTRAP")
	if _, err := LoadSettings(config.FromMap(env), "order"); err == nil || !strings.Contains(err.Error(), "GRPC_XDS_BOOTSTRAP") {
		t.Errorf("no bootstrap: got %v", err)
	}
}
