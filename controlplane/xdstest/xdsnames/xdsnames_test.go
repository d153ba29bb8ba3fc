package xdsnames

import (
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
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

func TestMinus(t *testing.T) {
	if got := Minus([]string{"a", "b", "c", "b"}, []string{"b"}); !slices.Equal(got, []string{"a", "c"}) {
		t.Errorf("Minus = %v", got)
	}
	if got := Minus(nil, []string{"a"}); got != nil {
		t.Errorf("Minus(nil) = %v", got)
	}
}
