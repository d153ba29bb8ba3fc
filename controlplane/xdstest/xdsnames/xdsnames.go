// Package xdsnames holds the name bookkeeping both simulated Envoys
// (xdstest/envoysim for tests, xdstest/xdsload for the load tool) need
// to follow a server the way Envoy does: which route configurations a
// listener asks for, and what a new subscription adds and drops.
package xdsnames

import (
	"slices"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// RouteNames returns the route configurations l's HTTP connection
// managers load over RDS, in filter order.
func RouteNames(l *listenerv3.Listener) []string {
	var out []string
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			if h := resource.GetHTTPConnectionManager(f); h.GetRds() != nil {
				out = append(out, h.GetRds().GetRouteConfigName())
			}
		}
	}
	return out
}

// Minus returns the names in a that are not in b, in a's order.
func Minus(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}
