// Package compose is the Docker system test (`make e2e`, build tag e2e):
// it runs docker-compose.yml with three order instances and drives it from
// outside, as a user would.
//
//	docker compose up --build --wait (project meshop-e2e-<pid>, random loopback ports)
//	   │
//	   ├─ order-1, order-2, order-3 passing in Consul, and all three in svc_order at the edge
//	   │
//	   ├─ purchase through the edge on 8080: register → login → products → checkout (tok_visa)
//	   │     with a traceparent of ours → Jaeger /api/traces/<id> holds the edge Envoy's span,
//	   │     order-sidecar's inbound and egress spans, the upstream sidecars' spans, the apps'
//	   │
//	   ├─ 20 s of GET /api/orders/<id> at a steady rate; order-2 (app and sidecar) is killed
//	   │     after 5 s → no request fails (edge retries + outlier detection), and order-2's
//	   │     address leaves svc_order in the control plane's /debug/config_dump?node=edge-1
//	   │
//	   └─ docker compose down -v (logs printed first when something failed)
//
// It needs a Docker engine that can build and pull images; without one it
// skips with one line saying so (MESHOP_E2E_REQUIRE_DOCKER=1 makes that a
// failure, for CI machines that must run it). The tag keeps it out of
// `make test`, which needs only Go.
package compose
