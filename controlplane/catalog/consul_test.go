package catalog

import (
	"maps"
	"testing"
)

func TestSharedReusesEqualValues(t *testing.T) {
	var seen []map[string]string
	a := shared(&seen, map[string]string{"mesh_app_port": "8080"}, maps.Equal)
	b := shared(&seen, map[string]string{"mesh_app_port": "8080"}, maps.Equal)
	c := shared(&seen, map[string]string{"mesh_app_port": "9090"}, maps.Equal)
	b["probe"] = "x" // a and b are one map when shared
	if a["probe"] != "x" {
		t.Error("equal meta maps were not shared")
	}
	if c["probe"] == "x" || c["mesh_app_port"] != "9090" {
		t.Errorf("a different meta map was replaced: %v", c)
	}
	for i := range 2 * maxShared {
		shared(&seen, map[string]string{"i": string(rune('a' + i))}, maps.Equal)
	}
	if len(seen) != maxShared {
		t.Errorf("remembered %d values, want at most %d", len(seen), maxShared)
	}
}
