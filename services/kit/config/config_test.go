package config

import (
	"strings"
	"testing"
	"time"
)

func TestReader(t *testing.T) {
	r := FromMap(map[string]string{
		"PORT": "8081", "BAD_PORT": "eighty", "BIG": "70000", "RATIO": "0.25",
		"WAIT": "250ms", "BAD_WAIT": "5", "MODE": "direct", "BAD_MODE": "magic", "BLANK": "  ",
	})
	if got := r.Int("PORT", 1, 1, 65535); got != 8081 {
		t.Errorf("PORT = %d", got)
	}
	if got := r.Float("RATIO", 1, 0, 1); got != 0.25 {
		t.Errorf("RATIO = %g", got)
	}
	if got := r.Duration("WAIT", time.Second); got != 250*time.Millisecond {
		t.Errorf("WAIT = %s", got)
	}
	if got := r.String("BLANK", "def"); got != "def" {
		t.Errorf("blank value should fall back to the default, got %q", got)
	}
	if got := r.OneOf("MODE", "", "sidecar", "direct"); got != "direct" {
		t.Errorf("MODE = %q", got)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("unexpected error: %v", err)
	}

	r.Int("BAD_PORT", 1, 1, 65535)
	r.Int("BIG", 1, 1, 65535)
	r.Duration("BAD_WAIT", time.Second)
	r.OneOf("BAD_MODE", "", "sidecar", "direct")
	r.Required("MISSING")
	err := r.Err()
	if err == nil {
		t.Fatal("want errors")
	}
	for _, want := range []string{
		`BAD_PORT: must be an integer, got "eighty"`,
		"BIG: must be between 1 and 65535, got 70000",
		`BAD_WAIT: must be a duration like 500ms or 5s, got "5"`,
		`BAD_MODE: must be one of sidecar, direct, got "magic"`,
		"MISSING: required but not set",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
