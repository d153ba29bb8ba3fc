# Meshop: one entry point for every task. `make` (or `make help`) lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
# Workspace modules; the tool modules under consul/tool and observability/jaeger
# are deliberately outside go.work.
MODULES := services/kit services/auth services/user services/product services/order services/payment services/notification controlplane localenv e2e deploy deploy/k8s bench
PKGS := $(addprefix ./,$(addsuffix /...,$(MODULES)))
GOTESTFLAGS ?= -count=1 -timeout 30m

# Pinned tool versions: change them here and in the tool module's go.mod.
CONSUL_MODULE := github.com/hashicorp/consul
CONSUL_VERSION := v1.16.3
JAEGER_MODULE := github.com/jaegertracing/jaeger
JAEGER_VERSION := v1.76.0
# Consul's go.sum was generated without the checksum database for these
# modules (it refuses them); builds verify against go.sum. v1.16.3 is the
# last Consul under MPL-2.0: v1.17 and later are under the BSL.
CONSUL_GOENV := GONOSUMDB=github.com/hashicorp/hcp-sdk-go,github.com/hashicorp/consul/envoyextensions
# Jaeger's go.sum was generated without the checksum database for these
# prefixes (it refuses some of them here); builds verify against go.sum.
JAEGER_GOENV := GONOSUMDB=github.com/open-telemetry,go.opentelemetry.io,github.com/jaegertracing

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z0-9_-]+:.*## /{printf "  %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## build every service, the control plane and meshctl into ./bin
	@mkdir -p $(BIN)
	go build -o $(BIN)/ $(addprefix ./,$(addsuffix /cmd/...,$(filter-out services/kit localenv,$(MODULES))))

.PHONY: test
test: tools ## run every test (unit, store, integration, system); needs only Go
	go test $(GOTESTFLAGS) $(PKGS)

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet $(PKGS)

# Pinned protobuf generators (make proto): change the versions here. protoc
# itself is Debian's protobuf-compiler; protoc-gen-go is the
# google.golang.org/protobuf of the workspace's go.mod files.
PROTOC_VERSION := 3.21.12
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2

.PHONY: proto
proto: ## regenerate the gRPC contracts' Go code (services/*/proto) with the pinned generators
	@v=$$(protoc --version 2>/dev/null); [ "$$v" = "libprotoc $(PROTOC_VERSION)" ] || { echo "proto: need protoc $(PROTOC_VERSION), found '$${v:-none}': install it with apt-get install protobuf-compiler (Debian bookworm)"; exit 1; }
	GOBIN=$(BIN) go install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(BIN) go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)
	@for dir in services/*/proto; do \
		files=$$(cd $$dir && find . -name '*.proto' -printf '%P\n' | sort); \
		echo "protoc ($$dir)" $$files; \
		(cd $$dir && protoc -I . --plugin=protoc-gen-go=$(BIN)/protoc-gen-go --plugin=protoc-gen-go-grpc=$(BIN)/protoc-gen-go-grpc \
			--go_out=. --go_opt=paths=source_relative --go-grpc_out=. --go-grpc_opt=paths=source_relative $$files) || exit 1; \
	done

.PHONY: tools
tools: ## build the pinned Consul and Jaeger into ./bin (skipped when already built at the pin)
	@$(CONSUL_GOENV) scripts/build-tool.sh $(BIN)/consul consul/tool $(CONSUL_MODULE) $(CONSUL_VERSION) $(CONSUL_MODULE)
	@$(JAEGER_GOENV) scripts/build-tool.sh $(BIN)/jaeger observability/jaeger $(JAEGER_MODULE) $(JAEGER_VERSION) $(JAEGER_MODULE)/cmd/jaeger

.PHONY: run
run: tools ## run the local system (Consul, Jaeger, control plane, services: proxyless, or sidecar with envoy on PATH); Ctrl-C stops it
	go build -o $(BIN)/meshop-local ./e2e/cmd/meshop-local
	go build -o $(BIN)/meshctl ./controlplane/cmd/meshctl
	$(BIN)/meshop-local

.PHONY: grant-admin
grant-admin: ## make a registered user an admin in make run's user database: make grant-admin EMAIL=ada@example.com
	@test -n "$(EMAIL)" || { echo "usage: make grant-admin EMAIL=<a registered user's email>"; exit 2; }
	go build -o $(BIN)/user ./services/user/cmd/user
	DATABASE_URL=sqlite:$(CURDIR)/.run/data/user.db $(BIN)/user grant-admin "$(EMAIL)"

.PHONY: clean
clean: ## remove built binaries and local run state
	rm -rf $(BIN) .run

# ---- Docker: the whole mesh with real Envoys (docker-compose.yml) ----------
COMPOSE ?= docker compose
# The edge's HTTPS certificate for compose, which mounts deploy/tls into
# the edge (deploy/tls/edge-https-sds.yaml names these files): a
# self-signed development pair for localhost, made once, never committed;
# delete both files to make a new one. The key is readable by everyone:
# the edge container's envoy user reads it through the bind mount.
EDGE_CERT := deploy/tls/edge-https.crt
EDGE_KEY := deploy/tls/edge-https.key

.PHONY: up
up: .env $(EDGE_CERT) ## build the images, start the mesh in Docker and wait until it answers; prints the URLs
	$(COMPOSE) up -d --build --wait --wait-timeout 600
	@echo
	@echo "Meshop is up (docker compose; make down stops it and deletes its data):"
	@echo "  API (edge Envoy)       https://localhost:8080/api/products  (a development certificate: curl --cacert $(EDGE_CERT))"
	@echo "  Consul UI              https://localhost:8501/ui  (a development CA: expect a warning; log in with CONSUL_MANAGEMENT_TOKEN from .env)"
	@echo "  Jaeger UI              http://localhost:16686"
	@echo "  Grafana                http://localhost:3000  (dashboard Meshop; admin/admin to edit)"
	@echo "  Prometheus             http://localhost:9090"
	@echo "  control-plane debug    http://localhost:18080/debug/nodes"

# The compose file's secrets, never committed: auth's key encryption key,
# PostgreSQL's superuser and role passwords, Consul's initial management
# token, the NATS users' passwords. scripts/compose-env.sh generates those
# .env lacks and keeps the rest, so it runs every time (an .env from an
# earlier checkout gains only the new ones). They belong with the volumes:
# after rm .env, make down too.
.PHONY: .env
.env:
	@sh scripts/compose-env.sh $@

.PHONY: edge-cert
edge-cert: $(EDGE_CERT) ## the edge's development HTTPS certificate (make up makes it)

$(EDGE_CERT):
	@command -v openssl >/dev/null || { echo "make: the edge's development certificate needs openssl on PATH" >&2; exit 1; }
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
	  -subj "/CN=localhost" -addext "subjectAltName=DNS:localhost,DNS:edge,IP:127.0.0.1" \
	  -keyout $(EDGE_KEY) -out deploy/tls/edge-https.tmp.crt
	chmod 644 $(EDGE_KEY)
	mv deploy/tls/edge-https.tmp.crt $@

.PHONY: down
down: ## stop the Docker mesh and delete its volumes
	$(COMPOSE) --profile order3 down -v --remove-orphans

.PHONY: logs
logs: ## follow the Docker mesh's logs (one service: make logs S=order)
	$(COMPOSE) logs -f --tail=100 $(S)

.PHONY: e2e
e2e: .env $(EDGE_CERT) ## the Docker system test: compose up, purchase via the edge, traces, order failover (skips without Docker)
	go test -tags e2e -count=1 -v -timeout 30m ./e2e/compose/...

# ---- Kubernetes: the Helm chart deploy/helm/meshop ---------------------------
K8S_OUT := .k8s

.PHONY: k8s-render
k8s-render: ## render the Helm chart into .k8s/ with Helm's Go SDK (defaults and proxyless; VALUES=file.yaml: that instead); no helm or cluster needed
	go run ./deploy/k8s/cmd/k8s-render -out $(K8S_OUT) $(addprefix -f ,$(VALUES))

.PHONY: k8s-e2e
k8s-e2e: ## the Kubernetes system test: install the dependencies and the chart, purchase through the edge (skips without kubectl, helm and a cluster)
	@sh deploy/helm/e2e.sh

# ---- Benchmarks: BENCHMARKS.md ----------------------------------------------
# benchstat is pinned here (golang.org/x/perf has no tags).
BENCHSTAT_VERSION := v0.0.0-20260908200009-22c9c6c9d4da

.PHONY: bench
bench: tools ## run the benchmark suite and write BENCHMARKS.md (about 20 min; QUICK=1: under 5 min, writes .bench/BENCHMARKS.md)
	@test -x $(BIN)/benchstat || GOBIN=$(BIN) go install golang.org/x/perf/cmd/benchstat@$(BENCHSTAT_VERSION)
	go run ./bench/cmd/benchsuite $(if $(QUICK),-quick)
