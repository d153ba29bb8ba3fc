package csds

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	statusv3 "github.com/envoyproxy/go-control-plane/envoy/service/status/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	cachetypes "github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshop/meshop/controlplane/serve"
)

type fakeServer struct {
	nodes []serve.NodeStatus
	res   map[string][]cachetypes.Resource
	vers  map[string]string
}

func (f fakeServer) Nodes() []serve.NodeStatus { return f.nodes }

func (f fakeServer) Resources(id string) (string, map[string][]cachetypes.Resource, map[string]string, error) {
	if id == "nosnap-1" {
		return id, nil, nil, serve.ErrNoSnapshot
	}
	return id, f.res, f.vers, nil
}

type fakeOps map[string]bool

func (f fakeOps) OperatorRead(_ context.Context, token string) (bool, error) {
	if token == "broken" {
		return false, errors.New("consul down")
	}
	return f[token], nil
}

func TestStatus(t *testing.T) {
	t0 := time.Now()
	inline := func(s string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: s}}
	}
	res := map[string][]cachetypes.Resource{
		resource.ClusterType:  {&clusterv3.Cluster{Name: "svc_a"}, &clusterv3.Cluster{Name: "svc_b"}},
		resource.ListenerType: {&listenerv3.Listener{Name: "inbound"}},
		resource.RouteType:    {},
		resource.SecretType: {&tlsv3.Secret{Name: "mesh_identity", Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inline("CERT"), PrivateKey: inline("THE-PRIVATE-KEY")}}}},
	}
	vers := map[string]string{resource.ClusterType: "c2", resource.ListenerType: "l2", resource.RouteType: "r1", resource.SecretType: "s1"}
	srv := fakeServer{res: res, vers: vers, nodes: []serve.NodeStatus{
		{ID: "a-1", Cluster: "a", Connected: true,
			LastSent: map[string]serve.Sent{resource.ClusterType: {Version: "c2", At: t0}, resource.ListenerType: {Version: "l2", At: t0}, resource.SecretType: {Version: "s1", At: t0}},
			LastAck:  map[string]serve.Ack{resource.ClusterType: {Version: "c2", At: t0}, resource.ListenerType: {Version: "l1", At: t0}},
			LastNack: &serve.Nack{TypeURL: resource.ListenerType, Version: "l2", Kept: "l1", Message: "bad listener", At: t0.Add(time.Millisecond)}},
		{ID: "b-1", Cluster: "b", Connected: true, LastSent: map[string]serve.Sent{}, LastAck: map[string]serve.Ack{}},
		{ID: "nosnap-1", Cluster: "x", LastSent: map[string]serve.Sent{}, LastAck: map[string]serve.Ack{}},
		{ID: "c-1", Key: "c-1"}, // a snapshot no Envoy asked for
	}}
	s := New(srv, fakeOps{"op": true}, nil)

	resp, err := s.Status(&statusv3.ClientStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, c := range resp.GetConfig() {
		ids = append(ids, c.GetNode().GetId())
	}
	if strings.Join(ids, ",") != "a-1,b-1,nosnap-1" {
		t.Fatalf("clients = %v, want a-1,b-1,nosnap-1", ids)
	}
	type row struct {
		cfg    statusv3.ConfigStatus
		client adminv3.ClientResourceStatus
	}
	got := map[string]row{}
	for _, x := range resp.GetConfig()[0].GetGenericXdsConfigs() {
		got[x.GetName()] = row{x.GetConfigStatus(), x.GetClientStatus()}
		if x.GetName() == "inbound" {
			if e := x.GetErrorState(); e.GetDetails() != "bad listener" || e.GetVersionInfo() != "l2" {
				t.Errorf("inbound error_state = %v", e)
			}
		} else if x.GetErrorState() != nil {
			t.Errorf("%s has an error_state", x.GetName())
		}
		if x.GetVersionInfo() != vers[x.GetTypeUrl()] || x.GetXdsConfig() == nil {
			t.Errorf("%s: version %q, config %v", x.GetName(), x.GetVersionInfo(), x.GetXdsConfig())
		}
	}
	want := map[string]row{
		"svc_a":         {statusv3.ConfigStatus_SYNCED, adminv3.ClientResourceStatus_ACKED},
		"svc_b":         {statusv3.ConfigStatus_SYNCED, adminv3.ClientResourceStatus_ACKED},
		"inbound":       {statusv3.ConfigStatus_ERROR, adminv3.ClientResourceStatus_NACKED},
		"mesh_identity": {statusv3.ConfigStatus_STALE, adminv3.ClientResourceStatus_REQUESTED},
	}
	for k, w := range want {
		if got[k] != w {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	for _, x := range resp.GetConfig()[1].GetGenericXdsConfigs() {
		if x.GetConfigStatus() != statusv3.ConfigStatus_NOT_SENT || x.GetClientStatus() != adminv3.ClientResourceStatus_REQUESTED {
			t.Errorf("b-1 %s: %v %v, want NOT_SENT REQUESTED", x.GetName(), x.GetConfigStatus(), x.GetClientStatus())
		}
	}
	if n := len(resp.GetConfig()[2].GetGenericXdsConfigs()); n != 0 {
		t.Errorf("a node without a snapshot lists %d resources", n)
	}
	b, _ := protojson.Marshal(resp)
	if strings.Contains(string(b), "THE-PRIVATE-KEY") || !strings.Contains(string(b), "[redacted]") {
		t.Errorf("private key not redacted: %s", b)
	}
	if res[resource.SecretType][0].(*tlsv3.Secret).GetTlsCertificate().GetPrivateKey().GetInlineString() != "THE-PRIVATE-KEY" {
		t.Error("redaction changed the served secret")
	}

	// Node matchers: OR of node id matchers.
	match := func(ms ...*matcherv3.NodeMatcher) string {
		resp, err := s.Status(&statusv3.ClientStatusRequest{NodeMatchers: ms, ExcludeResourceContents: true})
		if err != nil {
			return err.Error()
		}
		var ids []string
		for _, c := range resp.GetConfig() {
			ids = append(ids, c.GetNode().GetId())
			for _, x := range c.GetGenericXdsConfigs() {
				if x.GetXdsConfig() != nil {
					t.Error("exclude_resource_contents ignored")
				}
			}
		}
		return strings.Join(ids, ",")
	}
	id := func(m *matcherv3.StringMatcher) *matcherv3.NodeMatcher { return &matcherv3.NodeMatcher{NodeId: m} }
	for _, tc := range []struct {
		ms   []*matcherv3.NodeMatcher
		want string
	}{
		{[]*matcherv3.NodeMatcher{id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "b-1"}})}, "b-1"},
		{[]*matcherv3.NodeMatcher{id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "B-1"}, IgnoreCase: true})}, "b-1"},
		{[]*matcherv3.NodeMatcher{id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Prefix{Prefix: "a-"}}),
			id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Suffix{Suffix: "snap-1"}})}, "a-1,nosnap-1"},
		{[]*matcherv3.NodeMatcher{id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_SafeRegex{SafeRegex: &matcherv3.RegexMatcher{Regex: "[ab]-1"}}})}, "a-1,b-1"},
		{[]*matcherv3.NodeMatcher{id(&matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: "zzz"}})}, ""},
	} {
		if got := match(tc.ms...); got != tc.want {
			t.Errorf("matchers %v = %q, want %q", tc.ms, got, tc.want)
		}
	}
	if got := match(&matcherv3.NodeMatcher{NodeMetadatas: []*matcherv3.StructMatcher{{}}}); !strings.Contains(got, "not supported") {
		t.Errorf("metadata matcher: %s", got)
	}
}

func TestAuthorize(t *testing.T) {
	s := New(fakeServer{}, fakeOps{"op": true, "svc": false}, nil)
	ctx := func(kv ...string) context.Context {
		return metadata.NewIncomingContext(context.Background(), metadata.Pairs(kv...))
	}
	for _, tc := range []struct {
		ctx  context.Context
		want codes.Code
	}{
		{context.Background(), codes.Unauthenticated},
		{ctx("x-consul-token", "svc"), codes.PermissionDenied},
		{ctx("x-consul-token", "op"), codes.OK},
		{ctx("authorization", "Bearer op"), codes.OK},
		{ctx("authorization", "Bearer svc"), codes.PermissionDenied},
		{ctx("x-consul-token", "broken"), codes.Unavailable},
	} {
		_, err := s.FetchClientStatus(tc.ctx, &statusv3.ClientStatusRequest{})
		if status.Code(err) != tc.want {
			t.Errorf("%v: %v, want %v", tc.ctx, err, tc.want)
		}
	}
}
