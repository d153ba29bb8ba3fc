package localenv

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/consul/api"
)

// TestConfigEntriesAreApplied: every Consul localenv starts has the
// repository's intentions, so a call is allowed only where consul/config
// says so (default deny), and each service declares its protocol.
func TestConfigEntriesAreApplied(t *testing.T) {
	c := ConsulT(t)
	client, err := api.NewClient(&api.Config{Address: c.HTTPAddr(), Token: c.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		source, destination string
		allowed             bool
	}{
		{"order", "payment", true},
		{"order", "product", true},
		{"order", "user", true},
		{"edge", "order", true},
		{"edge", "payment", true},
		{"auth", "user", true},
		{"notification", "user", true},
		{"payment", "auth", true},
		{"notification", "payment", false},
		{"payment", "order", false},
		{"user", "order", false},
		{"edge", "edge", false},
		{"rogue", "auth", false},
	}
	for _, tt := range tests {
		allowed, _, err := client.Connect().IntentionCheck(&api.IntentionCheck{Source: tt.source, Destination: tt.destination}, nil)
		if err != nil {
			t.Fatalf("intentions/check %s → %s: %v", tt.source, tt.destination, err)
		}
		if allowed != tt.allowed {
			t.Errorf("intentions/check?source=%s&destination=%s: allowed %v, want %v", tt.source, tt.destination, allowed, tt.allowed)
		}
	}
	for _, svc := range NATSServices {
		entry, _, err := client.ConfigEntries().Get(api.ServiceDefaults, svc, nil)
		if err != nil {
			t.Errorf("service-defaults %s: %v", svc, err)
			continue
		}
		if got := entry.(*api.ServiceConfigEntry).Protocol; got != "http" {
			t.Errorf("service-defaults %s: protocol %q, want http", svc, got)
		}
	}
}

// TestApplyConfigEntriesNamesTheBadFile: a file that is not JSON, not a
// config entry, misspells a field or that Consul refuses stops the
// apply with an error naming the file.
func TestApplyConfigEntriesNamesTheBadFile(t *testing.T) {
	c := ConsulT(t)
	tests := []struct {
		name, body, want string
	}{
		{"not JSON", `{"Kind": "service-defaults",`, "unexpected end of JSON"},
		{"no kind", `{"Name": "order", "Protocol": "http"}`, "kind"},
		{"misspelt field", `{"Kind": "service-intentions", "Name": "order", "Soruces": [{"Name": "edge", "Action": "allow"}]}`, "Soruces"},
		{"refused by consul", `{"Kind": "service-intentions", "Name": "order", "Sources": [{"Name": "edge", "Action": "permit"}]}`, "must be set to 'allow' or 'deny'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			good := `{"Kind": "service-defaults", "Name": "order", "Protocol": "http"}`
			if err := os.WriteFile(filepath.Join(dir, "a-good.json"), []byte(good), 0o644); err != nil {
				t.Fatal(err)
			}
			bad := filepath.Join(dir, "b-bad.json")
			if err := os.WriteFile(bad, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			err := ApplyConfigEntries(context.Background(), c.HTTPAddr(), c.ManagementToken(), dir)
			if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(tt.want)) {
				t.Errorf("ApplyConfigEntries = %v, want an error naming %s and saying %q", err, bad, tt.want)
			}
		})
	}
	if err := ApplyConfigEntries(context.Background(), c.HTTPAddr(), c.ManagementToken(), t.TempDir()); err == nil {
		t.Error("an empty directory applied without an error")
	}
}
