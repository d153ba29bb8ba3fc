// Command meshctl is the operator's tool for a Meshop mesh: what every
// proxy was sent and acknowledged, each node's configuration as tables,
// a preflight check, a service's whole picture, policy edits that cannot
// lose a concurrent change, and an offline translator.
//
//	meshctl ──GET /debug/nodes, /debug/config_dump, /debug/model, /ready──▶ control plane(s)
//	   │                                                                       (merged by node id)
//	   └─────GET /v1/status/leader, /v1/health, config entries, KV (CAS)─────▶ Consul
//
//	meshctl policy validate, meshctl x translate: offline, the control
//	plane's own parser and translator (controlplane/model, translate).
//
// Exit codes: 0 ok, 1 a check found a problem or a command failed, 2 a
// usage error. Errors are one line on stderr.
package main

import (
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr, os.Getenv))
}
