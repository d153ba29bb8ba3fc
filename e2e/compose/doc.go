// Package compose is the Docker system test (`make e2e`, build tag e2e):
// it runs docker-compose.yml with three order instances and drives it from
// outside, as a user would.
//
//	docker compose up --build --wait (project meshop-e2e-<pid>, random loopback ports)
//	   │  the edge over HTTPS, trusting only deploy/tls/edge-https.crt; Consul over HTTPS
//	   │  on 8501, trusting only its CA (docker compose cp consul:/consul/ca/...), and it and
//	   │  the control plane's config dumps with .env's CONSUL_MANAGEMENT_TOKEN
//	   │
//	   ├─ order-1, order-2, order-3 passing in Consul, and all three in svc_order at the edge
//	   │
//	   ├─ purchase through the edge: register → login → products → checkout (tok_visa)
//	   │     with a traceparent of ours → Jaeger /api/traces/<id> holds the edge Envoy's span,
//	   │     order-sidecar's inbound and egress spans, the upstream sidecars' spans, the apps'
//	   │
//	   ├─ GET /api/orders with a forged token (auth's key id, signed by a key of ours) and
//	   │     with none → 401 and the JSON error, answered by the edge itself (no upstream)
//	   │
//	   ├─ 20 s of GET /api/orders/<id> at a steady rate; order-2 (app and sidecar) is killed
//	   │     after 5 s → no request fails (edge retries + outlier detection), and order-2's
//	   │     address leaves svc_order in the control plane's /debug/config_dump?node=edge-1
//	   │
//	   ├─ order's intention on payment removed (Consul's API) → within 20 s payment-sidecar's
//	   │     RBAC refuses order's charge and a checkout answers 503 checkout_pending naming
//	   │     payment; restored → checkouts succeed again (restored in cleanup whatever happens)
//	   │
//	   └─ docker compose down -v (logs printed first when something failed)
//
// It needs a Docker engine that can build and pull images, and what make
// e2e makes first (the edge's certificate, .env); without them it skips
// with one line saying so (MESHOP_E2E_REQUIRE_DOCKER=1 makes that a
// failure, for CI machines that must run it). The tag keeps it out of
// `make test`, which needs only Go.
package compose
