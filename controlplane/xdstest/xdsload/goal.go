package xdsload

import (
	"slices"
	"strings"
	"time"

	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// flavor is which server a node talks to: the names of what it receives
// differ (svc_<name> here; <name>.default.<dc>.internal.<trust domain>
// with Consul).
type flavor int

const (
	flavorMeshop flavor = iota
	flavorConsul
)

// upstreamLocked returns the cluster of upstream service svc.
func (n *node) upstreamLocked(svc string) (clusterInfo, bool) {
	if n.fl == flavorMeshop {
		c, ok := n.clusters["svc_"+svc]
		return c, ok
	}
	prefix := svc + ".default."
	for name, c := range n.clusters {
		if strings.HasPrefix(name, prefix) {
			return c, true
		}
	}
	return clusterInfo{}, false
}

// complete holds when the node has its whole configuration: clusters and
// listeners, a load assignment for every EDS cluster, a route
// configuration for every RDS name, and each upstream of the node with
// endpoints healthy addresses.
func complete(endpoints int) func(*node) bool {
	return func(n *node) bool {
		if len(n.clusters) == 0 || len(n.listeners) == 0 {
			return false
		}
		for _, name := range n.types[resource.EndpointType].Names {
			if _, ok := n.endpoints[name]; !ok {
				return false
			}
		}
		for _, name := range n.types[resource.RouteType].Names {
			if !n.routes[name] {
				return false
			}
		}
		for _, u := range n.ups {
			c, ok := n.upstreamLocked(u)
			if !ok || c.eds == "" || len(n.endpoints[c.eds]) != endpoints {
				return false
			}
		}
		return true
	}
}

// endpointsOf holds when upstream svc's load assignment has want healthy
// endpoints and the address ip is among them (present) or not.
func endpointsOf(svc, ip string, present bool, want int) func(*node) bool {
	return func(n *node) bool {
		c, ok := n.upstreamLocked(svc)
		if !ok {
			return false
		}
		eps, ok := n.endpoints[c.eds]
		if !ok || len(eps) != want {
			return false
		}
		_, found := slices.BinarySearch(eps, ip)
		return found == present
	}
}

// connectTimeout holds when upstream svc's cluster has connect timeout d.
func connectTimeout(svc string, d time.Duration) func(*node) bool {
	return func(n *node) bool {
		c, ok := n.upstreamLocked(svc)
		return ok && c.connectTimeout == d
	}
}
