package system

import (
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	// Types the bootstraps pack in Any fields, for protojson to resolve.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/resource_monitors/downstream_connections/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestLocalBootstrap checks the bootstraps `make run` gives local Envoys:
// strict Envoy v3 protos, valid, pointing at the local control plane, with
// each sidecar's ports where the control plane reads them.
func TestLocalBootstrap(t *testing.T) {
	ports := SidecarPorts{Inbound: 15104, Outbound: 15204, Admin: 15304}
	for _, kind := range []string{"sidecar", "edge"} {
		t.Run(kind, func(t *testing.T) {
			js, err := LocalBootstrap(kind, 18123, ports)
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
			xds := b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()[0].GetEndpoint().GetAddress().GetSocketAddress()
			if xds.GetAddress() != "127.0.0.1" || xds.GetPortValue() != 18123 {
				t.Errorf("control plane at %s:%d", xds.GetAddress(), xds.GetPortValue())
			}
			admin := b.GetAdmin().GetAddress().GetSocketAddress()
			if admin.GetAddress() != "127.0.0.1" || admin.GetPortValue() != 15304 {
				t.Errorf("admin at %s:%d", admin.GetAddress(), admin.GetPortValue())
			}
			if kind == "sidecar" {
				meta := b.GetNode().GetMetadata().GetFields()
				if meta["inbound_port"].GetNumberValue() != 15104 || meta["outbound_port"].GetNumberValue() != 15204 {
					t.Errorf("node metadata = %v", meta)
				}
			}
		})
	}
}
