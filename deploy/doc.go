// Package deploy checks the files that deploy Meshop with Docker, so they
// are validated by tests rather than by hope (`make test` runs it, no
// Docker needed):
//
//	envoy/*.yaml          ──render-bootstrap.sh──▶ ──strict protojson──▶ bootstrapv3.Bootstrap ──▶ ValidateAll,
//	  (templates)           (sample token)         no deprecated fields, node identity from the command line,
//	                                               token on the ADS stream, TLS to the control plane (SAN),
//	                                               admin on loopback, metrics listener 15090
//	docker-compose.yml    ──compose-go loader──▶ types.Project ──▶ sidecar per app in its network namespace,
//	  (+ order3 profile,                          nothing of an app published, images pinned, health checks,
//	   + e2e override)                             depends_on conditions, node id = INSTANCE_ID, Consul over
//	                                               TLS with each consumer's own token, one-shots adopted
//	consul/config/*.json  ──▶ intentions = the services' declared upstreams + the edge, protocol http
//	consul/compose/*.sh   ──run against bin/consul──▶ TLS, tokens that do their consumer's job only, intentions
//	nats/nats.conf        ──▶ generated from localenv.NATSServicePermissions, parsed by nats-server
//	scripts/compose-env.sh ──▶ makes every secret the compose file requires
//	Dockerfile            ──▶ pinned bases, static (CGO_ENABLED=0), non-root final image
//	observability/, postgres/ ──▶ scrape targets, datasources and dashboard queries name real things
//
// Its commands are baked into every Meshop image, which has no shell:
// cmd/launch turns ADVERTISE_ADDR from a container name into its IP before
// starting the service, and cmd/probe is the health check.
package deploy
