package app

import (
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/services/kit/config"
)

func TestLoadSettingsDefaults(t *testing.T) {
	s, err := LoadSettings(config.FromMap(map[string]string{"MESH_MODE": "direct"}), "order")
	if err != nil {
		t.Fatal(err)
	}
	if s.HTTPAddr != "127.0.0.1:8080" || s.CallTimeout != 2*time.Second || s.DatabaseURL != "sqlite:order.db" ||
		!strings.HasPrefix(s.InstanceID, "order-") || s.Version != "v1" {
		t.Errorf("defaults: %+v", s)
	}
}

func TestLoadSettingsNamesEveryBadVariable(t *testing.T) {
	_, err := LoadSettings(config.FromMap(map[string]string{
		"HTTP_ADDR": "8080", "MESH_CALL_TIMEOUT": "soon", "LOG_LEVEL": "loud", "OTEL_TRACES_SAMPLER_ARG": "2",
	}), "order")
	if err == nil {
		t.Fatal("want an error")
	}
	for _, v := range []string{"MESH_MODE", "HTTP_ADDR", "MESH_CALL_TIMEOUT", "LOG_LEVEL", "OTEL_TRACES_SAMPLER_ARG"} {
		if !strings.Contains(err.Error(), "config: "+v+":") {
			t.Errorf("error does not name %s:\n%v", v, err)
		}
	}
}
