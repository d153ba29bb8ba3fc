package system

import (
	"context"
	"testing"

	"github.com/hashicorp/consul/api"

	"github.com/meshop/meshop/localenv"
)

// TestAStartForgetsThePreviousRunsInstances: the local Consul keeps its
// data across runs; what a previous run registered (auth-local, passing
// on its last check) is gone before the system starts anything, so
// nothing is reported ready or routed to from the previous run's state.
func TestAStartForgetsThePreviousRunsInstances(t *testing.T) {
	consul := localenv.ConsulT(t)
	client, err := api.NewClient(&api.Config{Address: consul.HTTPAddr(), Token: consul.ManagementToken()})
	if err != nil {
		t.Fatal(err)
	}
	stale := &api.AgentServiceRegistration{ID: "auth-local", Name: "auth", Port: 8101,
		Check: &api.AgentServiceCheck{TTL: "1h", Status: api.HealthPassing}}
	if err := client.Agent().ServiceRegister(stale); err != nil {
		t.Fatal(err)
	}
	s := &System{Consul: consul}
	if err := s.forgetPreviousRun(context.Background()); err != nil {
		t.Fatal(err)
	}
	services, err := client.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if len(services) != 0 {
		t.Errorf("the previous run's instances are still registered: %v", services)
	}
}
