// Package deploy checks the files that deploy Meshop with Docker, so they
// are validated by tests rather than by hope (`make test` runs it, no
// Docker needed):
//
//	envoy/*.yaml          ──strict protojson──▶ bootstrapv3.Bootstrap ──▶ ValidateAll, no deprecated fields,
//	                                             only xds_cluster static, node identity from the command line
//	docker-compose.yml    ──compose-go loader──▶ types.Project ──▶ sidecar per app in its network namespace,
//	  (+ order3 profile,                          nothing of an app published, images pinned, health checks,
//	   + e2e override)                             depends_on conditions, node id = INSTANCE_ID
//	Dockerfile            ──▶ pinned bases, static (CGO_ENABLED=0), non-root final image
//	observability/, postgres/ ──▶ scrape targets, datasources and dashboard queries name real things
//
// Its commands are baked into every Meshop image, which has no shell:
// cmd/launch turns ADVERTISE_ADDR from a container name into its IP before
// starting the service, and cmd/probe is the health check.
package deploy
