package system

import (
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	// Types the bootstraps pack in Any fields, for protojson to resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestLocalBootstrap checks the bootstraps `make run` gives local Envoys:
// strict Envoy v3 protos, valid, pointing at the local control plane, with
// each sidecar's ports where the control plane reads them.
func TestLocalBootstrap(t *testing.T) {
	ports := SidecarPorts{Inbound: 15104, Outbound: 15204, Expose: 15404, Admin: 15304, Metrics: 15504}
	for _, kind := range []string{"sidecar", "edge"} {
		t.Run(kind, func(t *testing.T) {
			js, err := LocalBootstrap(kind, 18123, ports, "6c1f3d2e-0000-4000-8000-000000000000", "/run/roots.pem")
			if err != nil {
				t.Fatal(err)
			}
			var b bootstrapv3.Bootstrap
			if err := (protojson.UnmarshalOptions{DiscardUnknown: false}).Unmarshal(js, &b); err != nil {
				t.Fatalf("not a strict v3 Bootstrap: %v\n%s", err, js)
			}
			if err := b.ValidateAll(); err != nil {
				t.Fatalf("invalid: %v", err)
			}
			clusters := map[string]*clusterv3.Cluster{}
			for _, c := range b.GetStaticResources().GetClusters() {
				clusters[c.GetName()] = c
			}
			socket := func(c string) *corev3.SocketAddress {
				return clusters[c].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			}
			if xds := socket("xds_cluster"); xds.GetAddress() != "127.0.0.1" || xds.GetPortValue() != 18123 {
				t.Errorf("control plane at %s:%d", xds.GetAddress(), xds.GetPortValue())
			}
			if a := socket("envoy_admin"); a.GetPortValue() != 15304 {
				t.Errorf("the metrics listener's admin cluster points at %d", a.GetPortValue())
			}
			if js := string(js); !strings.Contains(js, "6c1f3d2e-0000-4000-8000-000000000000") || strings.Contains(js, "@CONSUL_TOKEN@") || !strings.Contains(js, "/run/roots.pem") {
				t.Errorf("token or roots not rendered:\n%s", js)
			}
			if l := b.GetStaticResources().GetListeners()[0]; l.GetAddress().GetSocketAddress().GetPortValue() != 15504 {
				t.Errorf("metrics listener %s on %d", l.GetName(), l.GetAddress().GetSocketAddress().GetPortValue())
			}
			admin := b.GetAdmin().GetAddress().GetSocketAddress()
			if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != 15304 {
				t.Errorf("admin at %s:%d", admin.GetAddress(), admin.GetPortValue())
			}
			if kind == "sidecar" {
				meta := b.GetNode().GetMetadata().GetFields()
				if meta["inbound_port"].GetNumberValue() != 15104 || meta["outbound_port"].GetNumberValue() != 15204 || meta["expose_port"].GetNumberValue() != 15404 {
					t.Errorf("node metadata = %v", meta)
				}
			}
		})
	}
}
