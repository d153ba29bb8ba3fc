package intern

import (
	"maps"
	"testing"
)

func TestSetSharesEqualValues(t *testing.T) {
	s := NewSet(maps.Equal[map[string]string])
	a := s.Get(map[string]string{"mesh_app_port": "8080"})
	b := s.Get(map[string]string{"mesh_app_port": "8080"})
	c := s.Get(map[string]string{"mesh_app_port": "9090"})
	b["probe"] = "x" // a and b are one map when shared
	if a["probe"] != "x" {
		t.Error("equal meta maps were not shared")
	}
	if c["probe"] == "x" || c["mesh_app_port"] != "9090" {
		t.Errorf("a different meta map was replaced: %v", c)
	}
	for i := range 2 * maxValues {
		s.Get(map[string]string{"i": string(rune('a' + i))})
	}
	if s.Len() != maxValues {
		t.Errorf("remembered %d values, want at most %d", s.Len(), maxValues)
	}
}
