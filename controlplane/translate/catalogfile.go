package translate

import (
	"encoding/json"
	"fmt"

	"sigs.k8s.io/yaml"

	"github.com/meshop/meshop/controlplane/catalog"
	"github.com/meshop/meshop/controlplane/internal/pmap"
)

// CatalogFile is a catalog snapshot written by hand (YAML or JSON): the
// instances as Consul would report them, the KV policies, the
// service-intentions entries, the translation settings and the node whose
// configuration is wanted. The golden tests' inputs (testdata/in/*.yaml)
// are catalog files, and `meshctl x translate --catalog` reads one.
type CatalogFile struct {
	Description string                `json:"description"`
	Node        CatalogFileNode       `json:"node"`
	Settings    CatalogFileSettings   `json:"config"`
	Instances   []CatalogFileInstance `json:"instances"`
	// Policies are the KV policies by service (the key below
	// mesh/policy/), as raw JSON strings.
	Policies map[string]string `json:"policies"`
	// TrustDomain is the Connect CA's; Intentions are service-intentions
	// config entries by destination, in Consul's JSON field names.
	TrustDomain string                     `json:"trust_domain"`
	Intentions  map[string]json.RawMessage `json:"intentions"`
}

// CatalogFileNode is the node a catalog file renders the configuration of.
type CatalogFileNode struct {
	ID           string `json:"id"`
	Cluster      string `json:"cluster"`
	InboundPort  uint32 `json:"inbound_port"`
	OutboundPort uint32 `json:"outbound_port"`
	Flavor       string `json:"flavor"`
}

// CatalogFileSettings are the translation settings that differ from
// DefaultConfig.
type CatalogFileSettings struct {
	CollectorAddress string   `json:"collector_address"`
	CORSOrigins      []string `json:"cors_origins"`
	RateLimitBurst   uint32   `json:"rate_limit_burst"`
	MTLS             bool     `json:"mtls"`
	EdgeTLS          *bool    `json:"edge_tls"`
}

// CatalogFileInstance is one registration; Status "" means passing.
type CatalogFileInstance struct {
	Service string            `json:"service"`
	ID      string            `json:"id"`
	Address string            `json:"address"`
	Port    int               `json:"port"`
	Status  string            `json:"status"`
	Tags    []string          `json:"tags"`
	Meta    map[string]string `json:"meta"`
}

// ParseCatalogFile decodes a catalog file; unknown fields are errors, so
// a misspelt key does not silently render another configuration.
func ParseCatalogFile(data []byte) (*CatalogFile, error) {
	var f CatalogFile
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return nil, fmt.Errorf("catalog file: %w", err)
	}
	return &f, nil
}

// Snapshot is the catalog snapshot the file describes (raft index 100,
// every instance on Consul node node-1, registered in file order).
func (f *CatalogFile) Snapshot() *catalog.Snapshot {
	services, policies := map[string][]catalog.Instance{}, map[string][]byte{}
	for i, in := range f.Instances {
		st := in.Status
		if st == "" {
			st = catalog.StatusPassing
		}
		services[in.Service] = append(services[in.Service], catalog.Instance{
			ID: in.ID, Service: in.Service, Node: "node-1", Address: in.Address, Port: in.Port,
			Status: st, Tags: in.Tags, Meta: in.Meta, CreateIndex: uint64(10 + i),
		})
	}
	for k, v := range f.Policies {
		policies[k] = []byte(v)
	}
	intentions := map[string][]byte{}
	for k, v := range f.Intentions {
		intentions[k] = v
	}
	return &catalog.Snapshot{Index: 100, Services: pmap.FromMap(services), Policies: pmap.FromMap(policies),
		Intentions: pmap.FromMap(intentions), CA: catalog.CA{TrustDomain: f.TrustDomain, RootPEMs: []string{"(roots)"}}}
}

// Config is DefaultConfig with the file's settings applied.
func (f *CatalogFile) Config() Config {
	cfg := DefaultConfig()
	if f.Settings.CollectorAddress != "" {
		cfg.CollectorAddress = f.Settings.CollectorAddress
	}
	if f.Settings.CORSOrigins != nil {
		cfg.CORSOrigins = f.Settings.CORSOrigins
	}
	if f.Settings.RateLimitBurst != 0 {
		cfg.RateLimit.Burst = f.Settings.RateLimitBurst
	}
	cfg.MTLS = f.Settings.MTLS
	if f.Settings.EdgeTLS != nil {
		cfg.EdgeTLS = *f.Settings.EdgeTLS
	}
	return cfg
}

// TranslateNode is the file's node as FromScratch takes it.
func (n CatalogFileNode) TranslateNode() Node {
	return Node{ID: n.ID, InboundPort: n.InboundPort, OutboundPort: n.OutboundPort, Flavor: n.Flavor, Edge: IsEdge(n.Cluster)}
}
