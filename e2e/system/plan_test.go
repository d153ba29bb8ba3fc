package system

import (
	"testing"
)

// ports lists every port of a plan, named.
func ports(p Plan) map[string]int {
	out := map[string]int{
		"consul http": p.Consul.HTTPPort, "consul server": p.Consul.ServerPort, "consul serf": p.Consul.SerfLANPort,
		"consul grpc": p.Consul.GRPCPort, "jaeger otlp grpc": p.Jaeger.OTLPGRPCPort, "jaeger otlp http": p.Jaeger.OTLPHTTPPort,
		"jaeger ui": p.Jaeger.UIPort, "jaeger query grpc": p.Jaeger.QueryGRPCPort, "jaeger health": p.Jaeger.HealthPort,
		"nats": p.NATS.Port, "xds": p.ControlPlaneXDS, "control plane debug": p.ControlPlaneDebug,
		"edge": p.Edge, "edge admin": p.EdgeAdmin,
	}
	for _, svc := range Services {
		out[svc], out[svc+" grpc"] = p.Services[svc], p.GRPC[svc]
		sc := p.Sidecars[svc]
		out[svc+" inbound"], out[svc+" egress"], out[svc+" admin"] = sc.Inbound, sc.Outbound, sc.Admin
	}
	return out
}

// TestPlansGiveEveryPartItsOwnPort: a port missing (0) or shared makes a
// part fail to start, or two parts fight over one port.
func TestPlansGiveEveryPartItsOwnPort(t *testing.T) {
	free, err := FreePlan(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for name, plan := range map[string]Plan{"fixed": FixedPlan(t.TempDir()), "free": free} {
		seen := map[int]string{}
		for part, port := range ports(plan) {
			if port <= 0 || port > 65535 {
				t.Errorf("%s plan: %s has port %d", name, part, port)
			}
			if other, dup := seen[port]; dup {
				t.Errorf("%s plan: %s and %s share port %d", name, part, other, port)
			}
			seen[port] = part
		}
	}
}
