package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/internal/poll"
	"github.com/meshop/meshop/controlplane/translate"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// TestCSDS queries the control plane's Client Status Discovery Service
// with go-control-plane's generated client, over TLS on the ADS port, as
// standard tooling would: it needs an operator's token (operator:read in
// Consul), lists every connected node with the resources of its snapshot
// and their ACK status, shows a NACK with Envoy's message, and never a
// private key.
func TestCSDS(t *testing.T) {
	agent, consul := consultest.Start(t)
	registerShop(agent)
	c := startCP(t, consul, "MESH_MTLS", "true")
	ctx := context.Background()

	secrets := []string{translate.SecretIdentity, translate.SecretRoots}
	order := c.envoy(t, envoysim.Options{ID: "order-1", Cluster: "order", Secrets: secrets})
	const refusal = "sim: listener refused for the CSDS test"
	c.envoy(t, envoysim.Options{ID: "payment-1", Cluster: "payment", Reject: func(typeURL string, _ map[string]proto.Message) string {
		if typeURL == resource.ListenerType {
			return refusal
		}
		return ""
	}})
	order.Must(t, 20*time.Second, "order's leaf", func(s envoysim.State) bool {
		return s.Secrets[translate.SecretIdentity].GetTlsCertificate().GetPrivateKey().GetInlineString() != ""
	})

	cc, err := grpc.NewClient(c.xds, grpc.WithTransportCredentials(credentials.NewTLS(c.tls)))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := statusv3.NewClientStatusDiscoveryServiceClient(cc)
	fetch := func(md []string, req *statusv3.ClientStatusRequest) (*statusv3.ClientStatusResponse, error) {
		ctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, md...), 10*time.Second)
		defer cancel()
		return client.FetchClientStatus(ctx, req)
	}

	// Who may ask: Consul's operator:read, as for /debug/config_dump.
	orderToken, err := consul.ServiceToken(ctx, "order")
	if err != nil {
		t.Fatal(err)
	}
	operatorToken, err := consul.PolicyToken(ctx, "csds-operator", `operator = "read"`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		md   []string
		want codes.Code
	}{
		{"no token", nil, codes.Unauthenticated},
		{"a service's token", []string{"x-consul-token", orderToken}, codes.PermissionDenied},
		{"a forged token", []string{"x-consul-token", "6c1f3d2e-0000-4000-8000-000000000000"}, codes.PermissionDenied},
		{"a service's token as a bearer", []string{"authorization", "Bearer " + orderToken}, codes.PermissionDenied},
		{"an operator:read token", []string{"x-consul-token", operatorToken}, codes.OK},
		{"an operator:read token as a bearer", []string{"authorization", "Bearer " + operatorToken}, codes.OK},
		{"the management token", []string{"x-consul-token", c.operator}, codes.OK},
	} {
		if _, err := fetch(tc.md, &statusv3.ClientStatusRequest{}); status.Code(err) != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}

	// order-1 ACKed everything it asked for; payment-1 NACKed listeners.
	op := []string{"x-consul-token", operatorToken}
	var resp *statusv3.ClientStatusResponse
	poll.Until(t, 20*time.Second, func() (bool, string) {
		resp, err = fetch(op, &statusv3.ClientStatusRequest{})
		if err != nil {
			return false, err.Error()
		}
		o, p := clientOf(resp, "order-1"), clientOf(resp, "payment-1")
		if o == nil || p == nil {
			return false, "order-1 and payment-1 not both listed: " + ids(resp)
		}
		for _, x := range o.GetGenericXdsConfigs() {
			if x.GetConfigStatus() != statusv3.ConfigStatus_SYNCED || x.GetClientStatus() != adminv3.ClientResourceStatus_ACKED {
				return false, fmt.Sprintf("order-1 %s %s: %v %v", shortType(x.GetTypeUrl()), x.GetName(), x.GetConfigStatus(), x.GetClientStatus())
			}
		}
		for _, x := range p.GetGenericXdsConfigs() {
			if x.GetTypeUrl() == resource.ListenerType && x.GetClientStatus() != adminv3.ClientResourceStatus_NACKED {
				return false, fmt.Sprintf("payment-1 listener %s: %v", x.GetName(), x.GetClientStatus())
			}
		}
		return true, ""
	})
	if got := ids(resp); got != "order-1,payment-1" {
		t.Errorf("clients = %s, want the two connected nodes (snapshots no Envoy asked for are no clients)", got)
	}
	o := clientOf(resp, "order-1")
	if o.GetNode().GetCluster() != "order" {
		t.Errorf("order-1's node = %v", o.GetNode())
	}
	names := map[string][]string{}
	for _, x := range o.GetGenericXdsConfigs() {
		names[x.GetTypeUrl()] = append(names[x.GetTypeUrl()], x.GetName())
		if x.GetVersionInfo() == "" || x.GetXdsConfig().GetTypeUrl() != x.GetTypeUrl() || x.GetLastUpdated() == nil || x.GetErrorState() != nil {
			t.Errorf("order-1 %s %s: version %q, config %q, last_updated %v, error %v", shortType(x.GetTypeUrl()), x.GetName(),
				x.GetVersionInfo(), x.GetXdsConfig().GetTypeUrl(), x.GetLastUpdated(), x.GetErrorState())
		}
	}
	if want := []string{"local_app", "otel_collector", "svc_payment", "svc_product", "svc_user"}; !slices.Equal(names[resource.ClusterType], want) {
		t.Errorf("order-1 clusters = %v, want %v", names[resource.ClusterType], want)
	}
	if !slices.Equal(names[resource.SecretType], []string{translate.SecretIdentity, translate.SecretRoots}) {
		t.Errorf("order-1 secrets = %v", names[resource.SecretType])
	}
	// The identity secret is shown with its certificate, without its key.
	for _, x := range o.GetGenericXdsConfigs() {
		if x.GetName() != translate.SecretIdentity {
			continue
		}
		var s tlsv3.Secret
		if err := x.GetXdsConfig().UnmarshalTo(&s); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(s.GetTlsCertificate().GetCertificateChain().GetInlineString(), "BEGIN CERTIFICATE") ||
			s.GetTlsCertificate().GetPrivateKey().GetInlineString() != "[redacted]" {
			t.Errorf("order-1's identity secret as CSDS shows it: %v", &s)
		}
	}
	if b, _ := protojson.Marshal(resp); strings.Contains(string(b), "PRIVATE KEY") {
		t.Error("a CSDS response holds a private key")
	}
	// payment-1's NACK: its listeners are NACKED with the simulated
	// Envoy's message, the rest is as the tracker saw it.
	p := clientOf(resp, "payment-1")
	nacked := 0
	for _, x := range p.GetGenericXdsConfigs() {
		switch x.GetTypeUrl() {
		case resource.ListenerType:
			nacked++
			if x.GetConfigStatus() != statusv3.ConfigStatus_ERROR || x.GetErrorState().GetDetails() != refusal || x.GetErrorState().GetVersionInfo() != x.GetVersionInfo() {
				t.Errorf("payment-1 listener %s: %v, error_state %v", x.GetName(), x.GetConfigStatus(), x.GetErrorState())
			}
		case resource.ClusterType:
			if x.GetConfigStatus() != statusv3.ConfigStatus_SYNCED || x.GetClientStatus() != adminv3.ClientResourceStatus_ACKED {
				t.Errorf("payment-1 cluster %s: %v %v", x.GetName(), x.GetConfigStatus(), x.GetClientStatus())
			}
		}
	}
	if nacked == 0 {
		t.Error("payment-1 lists no listener")
	}

	// The stream answers each request; a request naming a node (as a CSDS
	// client may) is not held to xdsauth's node check.
	sctx, cancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, op...), 10*time.Second)
	defer cancel()
	stream, err := client.StreamClientStatus(sctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		m    *matcherv3.StringMatcher
		want string
	}{
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "payment-1"}}, "payment-1"},
		{&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "order-"}}, "order-1"},
	} {
		req := &statusv3.ClientStatusRequest{
			Node:         &corev3.Node{Id: "csds-test", Cluster: "operators"},
			NodeMatchers: []*matcherv3.NodeMatcher{{NodeId: tc.m}},
		}
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("stream: %v", err)
		}
		if got := ids(resp); got != tc.want {
			t.Errorf("stream, node matcher %v: %s, want %s", tc.m, got, tc.want)
		}
	}
	stream.CloseSend()

	// A stream without a token is refused at its first request.
	nctx, ncancel := context.WithTimeout(ctx, 10*time.Second)
	defer ncancel()
	anon, err := client.StreamClientStatus(nctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = anon.Send(&statusv3.ClientStatusRequest{})
	if _, err := anon.Recv(); status.Code(err) != codes.Unauthenticated {
		t.Errorf("a stream without a token: %v, want Unauthenticated", err)
	}
}

func clientOf(resp *statusv3.ClientStatusResponse, id string) *statusv3.ClientConfig {
	for _, c := range resp.GetConfig() {
		if c.GetNode().GetId() == id {
			return c
		}
	}
	return nil
}

func ids(resp *statusv3.ClientStatusResponse) string {
	var out []string
	for _, c := range resp.GetConfig() {
		out = append(out, c.GetNode().GetId())
	}
	return strings.Join(out, ",")
}

func shortType(typeURL string) string { return typeURL[strings.LastIndex(typeURL, ".")+1:] }
