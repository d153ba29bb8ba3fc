package adsclient

import (
	"slices"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/protobuf/types/known/anypb"
)

func TestRouteNames(t *testing.T) {
	pack := func(rds string) *listenerv3.Filter {
		h := &hcmv3.HttpConnectionManager{StatPrefix: rds}
		if rds != "" {
			h.RouteSpecifier = &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: rds}}
		}
		a, err := anypb.New(h)
		if err != nil {
			t.Fatal(err)
		}
		return &listenerv3.Filter{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: a}}
	}
	other, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	l := &listenerv3.Listener{FilterChains: []*listenerv3.FilterChain{
		{Filters: []*listenerv3.Filter{pack("inbound"), {Name: "other", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: other}}}},
		{Filters: []*listenerv3.Filter{pack(""), pack("outbound")}},
	}}
	if got := RouteNames(l); !slices.Equal(got, []string{"inbound", "outbound"}) {
		t.Errorf("RouteNames = %v, want [inbound outbound]", got)
	}
}

func TestResubscribe(t *testing.T) {
	s := Subscription{TypeURL: resource.EndpointType}
	tests := []struct {
		name        string
		names       []string
		wantChanged bool
		want        Change
		wantNames   []string
	}{
		{"first names, sorted and compacted", []string{"b", "a", "b"}, true,
			Change{TypeURL: resource.EndpointType, Subscribe: []string{"a", "b"}}, []string{"a", "b"}},
		{"same names", []string{"a", "b"}, false, Change{}, []string{"a", "b"}},
		{"one added, one dropped", []string{"c", "a"}, true,
			Change{TypeURL: resource.EndpointType, Subscribe: []string{"c"}, Unsubscribe: []string{"b"}}, []string{"a", "c"}},
		{"none", nil, true, Change{TypeURL: resource.EndpointType, Unsubscribe: []string{"a", "c"}}, nil},
	}
	for _, tt := range tests {
		got, changed := s.Resubscribe(tt.names)
		if changed != tt.wantChanged || !cmp.Equal(got, tt.want, cmpopts.EquateEmpty()) || !slices.Equal(s.Names, tt.wantNames) {
			t.Errorf("%s: Resubscribe = %+v, %v; names %v, want %+v, %v; names %v",
				tt.name, got, changed, s.Names, tt.want, tt.wantChanged, tt.wantNames)
		}
	}
}

func TestEDSName(t *testing.T) {
	eds := func(service string) *clusterv3.Cluster {
		return &clusterv3.Cluster{Name: "svc_order", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: service}}
	}
	tests := []struct {
		name string
		c    *clusterv3.Cluster
		want string
	}{
		{"EDS, service name", eds("order"), "order"},
		{"EDS, no service name", eds(""), "svc_order"},
		{"static", &clusterv3.Cluster{Name: "local_app"}, ""},
	}
	for _, tt := range tests {
		if got := EDSName(tt.c); got != tt.want {
			t.Errorf("%s: EDSName = %q, want %q", tt.name, got, tt.want)
		}
	}
}
