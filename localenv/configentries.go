package localenv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
)

// ConfigEntriesDir is where the repository keeps Consul's config entries
// (consul/config/*.json): a service-defaults entry per service and a
// service-intentions entry per destination. Every Consul localenv starts
// gets them, and compose's consul-init applies the same files.
func ConfigEntriesDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "consul", "config"), nil
}

// ApplyConfigEntries writes every *.json file of dir to the Consul agent at
// consulAddr (host:port or a URL) as a config entry, with token. A file
// holds one entry in the JSON that `consul config write` accepts, with
// Consul's CamelCase field names; a field Consul's API does not know is
// an error rather than silently dropped (a misspelt "Sources" would
// otherwise leave a destination with no intentions). Files are applied in
// name order, so service-defaults-* (the protocol, which L7 intentions
// need) precede service-intentions-*. An error names the file.
func ApplyConfigEntries(ctx context.Context, consulAddr, token, dir string) error {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return fmt.Errorf("localenv: no Consul config entries (*.json) in %s", dir)
	}
	client, err := api.NewClient(&api.Config{Address: consulAddr, Token: token})
	if err != nil {
		return fmt.Errorf("localenv: consul client: %w", err)
	}
	for _, file := range files {
		entry, err := readConfigEntry(file)
		if err != nil {
			return fmt.Errorf("localenv: consul config entry %s: %w", file, err)
		}
		written, err := setConfigEntry(ctx, client, entry)
		if err == nil && !written {
			err = fmt.Errorf("consul did not write it")
		}
		if err != nil {
			return fmt.Errorf("localenv: consul config entry %s (%s %q): %w", file, entry.GetKind(), entry.GetName(), err)
		}
	}
	return nil
}

// intentionsUpgrading is how a fresh Consul agent (1.16) refuses
// intention writes for a moment after it elects itself leader, while it
// migrates legacy intentions to config entries (ErrIntentionsNotUpgradedYet
// in Consul's source). Seen in tests as a 500 on the first write.
const intentionsUpgrading = "Intentions are read only while being upgraded to config entries"

// setConfigEntry writes entry, waiting out a fresh agent's intention
// upgrade (up to 30 s); any other error returns at once.
func setConfigEntry(ctx context.Context, client *api.Client, entry api.ConfigEntry) (bool, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		written, _, err := client.ConfigEntries().Set(entry, (&api.WriteOptions{}).WithContext(ctx))
		if err == nil || !strings.Contains(err.Error(), intentionsUpgrading) || time.Now().After(deadline) {
			return written, err
		}
		select {
		case <-ctx.Done():
			return false, err
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// readConfigEntry decodes one entry with Consul's own decoder, after
// checking that every field of the file is a field of the entry's type.
func readConfigEntry(file string) (api.ConfigEntry, error) {
	raw, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	entry, err := api.DecodeConfigEntryFromJSON(raw)
	if err != nil {
		return nil, err
	}
	strict := json.NewDecoder(bytes.NewReader(raw))
	strict.DisallowUnknownFields()
	if err := strict.Decode(reflect.New(reflect.TypeOf(entry).Elem()).Interface()); err != nil {
		return nil, fmt.Errorf("not a %s entry: %w", entry.GetKind(), err)
	}
	if entry.GetName() == "" {
		return nil, fmt.Errorf("%s entry without a Name", entry.GetKind())
	}
	return entry, nil
}

// applyConfigEntries applies the repository's config entries
// (ConfigEntriesDir) with the management token. When that fails it stops
// the agent, so a caller that gets the error has nothing left to stop.
func (c *Consul) applyConfigEntries(ctx context.Context) error {
	dir, err := ConfigEntriesDir()
	if err == nil {
		err = ApplyConfigEntries(ctx, c.HTTPAddr(), c.ManagementToken(), dir)
	}
	if err != nil {
		if serr := c.Stop(10 * time.Second); serr != nil {
			err = fmt.Errorf("%w (and stopping consul: %v)", err, serr)
		}
		return err
	}
	return nil
}
