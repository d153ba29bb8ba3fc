// Package consultest registers fake service instances in a real Consul
// agent for tests: each instance gets a TTL check, so a test flips it
// between passing and critical instantly instead of waiting for an HTTP
// check interval.
package consultest

import (
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/localenv"
)

// Agent wraps a Consul client for test registrations.
type Agent struct {
	t      testing.TB
	Client *api.Client
}

// Start starts a Consul agent for the test (see localenv.ConsulT).
func Start(t testing.TB) (*Agent, *localenv.Consul) {
	t.Helper()
	c := localenv.ConsulT(t)
	return New(t, c.HTTPAddr(), c.ManagementToken()), c
}

// New returns an Agent for the agent at addr, acting with token.
func New(t testing.TB, addr, token string) *Agent {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = addr
	cfg.Token = token
	cl, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &Agent{t: t, Client: cl}
}

// Instance describes a registration the way Meshop services write it.
type Instance struct {
	Service   string
	ID        string
	Port      int
	AppPort   string // mesh_app_port; "" leaves it out
	Upstreams string // mesh_upstreams
	Prefixes  string // mesh_public_prefixes
	Protocol  string // mesh_protocol; "" means http
	Version   string // meta version; "" means v1
	// Meta overrides or adds meta keys.
	Meta map[string]string
}

// Register registers in (address 127.0.0.1) with a passing TTL check whose
// ID is CheckID(in.ID).
func (a *Agent) Register(in Instance) {
	a.t.Helper()
	meta := map[string]string{
		"mesh_protocol":        or(in.Protocol, "http"),
		"mesh_upstreams":       in.Upstreams,
		"mesh_public_prefixes": in.Prefixes,
		"version":              or(in.Version, "v1"),
	}
	if in.AppPort != "" {
		meta["mesh_app_port"] = in.AppPort
	}
	for k, v := range in.Meta {
		meta[k] = v
	}
	reg := &api.AgentServiceRegistration{
		ID: in.ID, Name: in.Service, Address: "127.0.0.1", Port: in.Port,
		Tags: []string{or(in.Version, "v1")}, Meta: meta,
		Check: &api.AgentServiceCheck{
			CheckID: CheckID(in.ID), TTL: "10m", Status: api.HealthPassing,
			DeregisterCriticalServiceAfter: "30m",
		},
	}
	if err := a.Client.Agent().ServiceRegister(reg); err != nil {
		a.t.Fatalf("register %s: %v", in.ID, err)
	}
}

// Deregister removes an instance.
func (a *Agent) Deregister(id string) {
	a.t.Helper()
	if err := a.Client.Agent().ServiceDeregister(id); err != nil {
		a.t.Fatalf("deregister %s: %v", id, err)
	}
}

// CheckID is the TTL check ID of an instance.
func CheckID(instanceID string) string { return "ttl:" + instanceID }

// Pass marks the instance's check passing.
func (a *Agent) Pass(id string) {
	a.t.Helper()
	if err := a.Client.Agent().UpdateTTL(CheckID(id), "ok", api.HealthPassing); err != nil {
		a.t.Fatalf("pass %s: %v", id, err)
	}
}

// Fail marks the instance's check critical.
func (a *Agent) Fail(id string) {
	a.t.Helper()
	if err := a.Client.Agent().UpdateTTL(CheckID(id), "test says no", api.HealthCritical); err != nil {
		a.t.Fatalf("fail %s: %v", id, err)
	}
}

// PutPolicy writes the KV policy of a service.
func (a *Agent) PutPolicy(service, json string) {
	a.t.Helper()
	if _, err := a.Client.KV().Put(&api.KVPair{Key: "mesh/policy/" + service, Value: []byte(json)}, nil); err != nil {
		a.t.Fatalf("put policy %s: %v", service, err)
	}
}

// PutIntentions writes the service-intentions config entry of a
// destination (replacing it) with these sources.
func (a *Agent) PutIntentions(destination string, sources ...*api.SourceIntention) {
	a.t.Helper()
	entry := &api.ServiceIntentionsConfigEntry{Kind: api.ServiceIntentions, Name: destination, Sources: sources}
	if _, _, err := a.Client.ConfigEntries().Set(entry, nil); err != nil {
		a.t.Fatalf("put intentions %s: %v", destination, err)
	}
}

// DeleteIntentions deletes the service-intentions config entry of a
// destination.
func (a *Agent) DeleteIntentions(destination string) {
	a.t.Helper()
	if _, err := a.Client.ConfigEntries().Delete(api.ServiceIntentions, destination, nil); err != nil {
		a.t.Fatalf("delete intentions %s: %v", destination, err)
	}
}

// Eventually is poll.Until.
func Eventually(t testing.TB, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	poll.Until(t, within, cond)
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
