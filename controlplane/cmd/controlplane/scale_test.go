package main

import (
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshop/meshop/controlplane/internal/consultest"
	"github.com/meshop/meshop/controlplane/xdstest/envoysim"
)

// TestMoreServicesThanConsulsConnectionLimit registers more services than
// a default Consul lets one client hold connections
// (http_max_conns_per_client = 200), one blocking query each, and checks
// that every one reaches the edge, which routes them all, and that a
// change still arrives: over Consul's HTTPS listener the queries share
// HTTP/2 connections (one per 250 queries).
func TestMoreServicesThanConsulsConnectionLimit(t *testing.T) {
	const services = 300
	agent, consul := consultest.Start(t)
	for i := range services {
		name := fmt.Sprintf("svc-%03d", i)
		agent.Register(consultest.Instance{Service: name, ID: name + "-1", Port: 20000 + i, AppPort: "8080", Prefixes: "/" + name})
	}
	c := startCP(t, consul, "CONSUL_HTTP_ADDR", consul.HTTPSAddr(), "CONSUL_CACERT", consul.CAFile())
	edge := c.envoy(t, envoysim.Options{ID: "edge-1", Cluster: "edge", Delta: true})

	missing := func(s envoysim.State) []string {
		var out []string
		for i := range services {
			name := fmt.Sprintf("svc-%03d", i)
			if !slices.Equal(s.Hosts("svc_"+name), []string{name + "-1"}) {
				out = append(out, name)
			}
		}
		return out
	}
	if err := edge.WaitFor(60*time.Second, func(s envoysim.State) bool { return len(missing(s)) == 0 }); err != nil {
		m := missing(edge.State())
		t.Fatalf("%d of %d services never reached the edge (first: %v): %v", len(m), services, m[:min(5, len(m))], err)
	}
	port := consul.HTTPSAddr()[strings.LastIndexByte(consul.HTTPSAddr(), ':')+1:]
	conns, err := establishedTo(port)
	if err != nil {
		t.Fatal(err)
	}
	// The watcher's 304 blocking queries share two HTTP/2 connections;
	// the control plane's other Consul clients (leaf certificates, the
	// last good policies, operator checks) hold one or two more. One
	// connection per query would be over 200 (and refused).
	if conns == 0 || conns > 8 {
		t.Errorf("%d connections to Consul's HTTPS port for %d blocking queries, want at most 8 (HTTP/2)", conns, services+4)
	} else {
		t.Logf("%d services followed over %d connections", services, conns)
	}

	agent.Fail("svc-123-1")
	edge.Must(t, 5*time.Second, "svc-123's instance removed", func(s envoysim.State) bool { return len(s.Hosts("svc_svc-123")) == 0 })
}

// establishedTo counts this machine's established TCP connections (IPv4)
// whose remote port is port: the clients of a server listening on it.
func establishedTo(port string) (int, error) {
	p, err := strconv.Atoi(port)
	if err != nil {
		return 0, err
	}
	b, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		return 0, err
	}
	want := fmt.Sprintf(":%04X", p)
	n := 0
	for _, line := range strings.Split(string(b), "\n")[1:] {
		f := strings.Fields(line)
		// local_address rem_address st: 01 is ESTABLISHED.
		if len(f) > 3 && strings.HasSuffix(f[2], want) && f[3] == "01" {
			n++
		}
	}
	return n, nil
}
