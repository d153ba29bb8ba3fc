#!/bin/sh
# make k8s-e2e: Meshop's system test on Kubernetes. Against the cluster of
# kubectl's current context (kind, or any KUBECONFIG) it installs, in a
# fresh namespace, what README "Run it on Kubernetes" installs, in the same
# order: Consul (HashiCorp's chart), NATS, Jaeger, a throwaway PostgreSQL
# (postgres/init makes the databases and roles, as in compose; the chart
# only ever sees its URLs), then Meshop's chart; and buys a product through
# the edge's LoadBalancer Service (reached with kubectl port-forward):
# register, log in, list products, check out with tok_visa, read the order
# back. It passes when the order is CONFIRMED.
#
# Without kubectl, helm and a reachable cluster it prints one line saying
# it skips, like make e2e without Docker (MESHOP_K8S_E2E_REQUIRE=1 turns
# the skip into a failure). Images: on a kind cluster it builds Meshop's
# images with docker and loads them into the cluster; elsewhere set
# MESHOP_IMAGES=<registry prefix> and MESHOP_TAG to images you pushed.
#
#   MESHOP_K8S_NAMESPACE   namespace to use (default meshop-e2e; deleted at the end)
#   MESHOP_K8S_E2E_KEEP=1  keep the namespace and releases afterwards
#   MESH_MODE=proxyless    run the apps proxyless
set -eu
cd "$(dirname "$0")/../.."

skip() {
  if [ -n "${MESHOP_K8S_E2E_REQUIRE:-}" ]; then
    echo "k8s-e2e: FAILED: MESHOP_K8S_E2E_REQUIRE is set but $1" >&2
    exit 1
  fi
  echo "k8s-e2e: skipped: $1"
  exit 0
}
command -v kubectl >/dev/null 2>&1 || skip "no kubectl on PATH (needs kubectl, helm and a cluster: kind or any KUBECONFIG)"
command -v helm >/dev/null 2>&1 || skip "no helm on PATH (needs kubectl, helm and a cluster: kind or any KUBECONFIG)"
kubectl version --request-timeout=5s >/dev/null 2>&1 || skip "kubectl reaches no cluster (context '$(kubectl config current-context 2>/dev/null || echo none)')"
for tool in curl jq openssl; do
  command -v "$tool" >/dev/null 2>&1 || { echo "k8s-e2e: needs $tool on PATH" >&2; exit 1; }
done

# Pinned dependency charts: README "Run it on Kubernetes" lists the same.
CONSUL_CHART_VERSION=1.2.3
NATS_CHART_VERSION=1.3.13
JAEGER_CHART_VERSION=4.13.0
ns=${MESHOP_K8S_NAMESPACE:-meshop-e2e}
deps=deploy/helm/deps
work=$(mktemp -d)
pf_pid=

cleanup() {
  [ -n "$pf_pid" ] && kill "$pf_pid" 2>/dev/null || true
  if [ -z "${MESHOP_K8S_E2E_KEEP:-}" ]; then
    echo "k8s-e2e: deleting namespace $ns"
    for release in meshop jaeger nats consul; do helm uninstall -n "$ns" "$release" --wait >/dev/null 2>&1 || true; done
    kubectl delete clusterrolebinding "meshop-auth-method-$ns" --ignore-not-found >/dev/null 2>&1 || true
    kubectl delete namespace "$ns" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

# ---- images ----------------------------------------------------------------
repo=${MESHOP_IMAGES:-meshop}
tag=${MESHOP_TAG:-k8s-e2e}
context=$(kubectl config current-context)
if [ -z "${MESHOP_IMAGES:-}" ]; then
  case $context in
    kind-*) ;;
    *) echo "k8s-e2e: context $context is not kind: push Meshop's images and set MESHOP_IMAGES and MESHOP_TAG" >&2; exit 1 ;;
  esac
  command -v docker >/dev/null 2>&1 && command -v kind >/dev/null 2>&1 || { echo "k8s-e2e: building for kind needs docker and kind on PATH" >&2; exit 1; }
  for svc in auth user product order payment notification controlplane; do
    pkg=./services/$svc/cmd/$svc
    [ "$svc" = controlplane ] && pkg=./controlplane/cmd/controlplane
    docker build -q --build-arg SERVICE="$svc" --build-arg PKG="$pkg" -t "$repo/$svc:$tag" . >/dev/null
    kind load docker-image --name "${context#kind-}" "$repo/$svc:$tag" >/dev/null
    echo "k8s-e2e: image $repo/$svc:$tag loaded into $context"
  done
fi

# ---- dependencies, in README's order ------------------------------------------
kubectl create namespace "$ns" >/dev/null
helm repo add hashicorp https://helm.releases.hashicorp.com >/dev/null
helm repo add nats https://nats-io.github.io/k8s/helm/charts/ >/dev/null
helm repo add jaegertracing https://jaegertracing.github.io/helm-charts >/dev/null
helm repo update >/dev/null

# Every secret is generated here, never a default.
secret() { openssl rand -hex 24; }
set -- --from-literal=auth-key-encryption-key="$(openssl rand -base64 32)"
pg_env=$work/postgres.env
echo "POSTGRES_PASSWORD=$(secret)" >"$pg_env"
for svc in auth user product order payment notification; do
  db=$(secret)
  upper=$(echo "$svc" | tr a-z A-Z)
  echo "${upper}_DB_PASSWORD=$db" >>"$pg_env"
  set -- "$@" --from-literal="$svc-database-url=postgres://$svc:$db@postgres:5432/$svc?sslmode=disable" \
    --from-literal="$svc-nats-password=$(secret)"
done
kubectl -n "$ns" create secret generic meshop-secrets "$@" >/dev/null
kubectl -n "$ns" create secret generic postgres --from-env-file="$pg_env" >/dev/null

helm install consul hashicorp/consul --version "$CONSUL_CHART_VERSION" -n "$ns" -f "$deps/consul-values.yaml" --wait --timeout 10m
helm install nats nats/nats --version "$NATS_CHART_VERSION" -n "$ns" -f "$deps/nats-values.yaml" --wait --timeout 5m
helm install jaeger jaegertracing/jaeger --version "$JAEGER_CHART_VERSION" -n "$ns" -f "$deps/jaeger-values.yaml" --wait --timeout 5m

# A throwaway PostgreSQL for the test: postgres/init makes a database and
# a role per service, as in compose. Production uses an operator's.
kubectl -n "$ns" create configmap postgres-init --from-file=postgres/init >/dev/null
kubectl -n "$ns" apply -f - >/dev/null <<EOF
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
        - name: postgres
          image: postgres:17.6-alpine
          envFrom: [{secretRef: {name: postgres}}]
          ports: [{containerPort: 5432}]
          readinessProbe: {exec: {command: [pg_isready, -h, 127.0.0.1, -U, postgres]}}
          volumeMounts: [{name: init, mountPath: /docker-entrypoint-initdb.d}]
      volumes: [{name: init, configMap: {name: postgres-init}}]
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec:
  selector: {app: postgres}
  ports: [{port: 5432}]
EOF
kubectl -n "$ns" rollout status deployment/postgres --timeout=5m

# The edge's HTTPS certificate: a self-signed one for the test.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj "/CN=localhost" \
  -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" -keyout "$work/edge.key" -out "$work/edge.crt" 2>/dev/null
kubectl -n "$ns" create secret tls meshop-edge-tls --cert="$work/edge.crt" --key="$work/edge.key" >/dev/null

# ---- Meshop ---------------------------------------------------------------
helm install meshop deploy/helm/meshop -n "$ns" \
  --set images.repository="$repo" --set images.tag="$tag" --set mesh.mode="${MESH_MODE:-sidecar}" \
  --set consul.namespace="$ns" --wait --timeout 15m

# ---- the purchase, through the edge ------------------------------------------
kubectl -n "$ns" port-forward service/edge :443 >"$work/pf.log" 2>&1 &
pf_pid=$!
port=
i=0
until port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$work/pf.log" | head -n1) && [ -n "$port" ]; do
  i=$((i + 1))
  [ "$i" -le 300 ] || { echo "k8s-e2e: kubectl port-forward did not start: $(cat "$work/pf.log")" >&2; exit 1; }
  sleep 0.1
done
call() { curl -sS --cacert "$work/edge.crt" --resolve "localhost:$port:127.0.0.1" -o "$work/body" -w '%{http_code}' "$@"; }
api="https://localhost:$port/api"

email="k8s-e2e-$(openssl rand -hex 4)@example.com"
password="correct horse battery $(openssl rand -hex 4)"
# helm --wait saw every pod ready; the edge may still be learning the
# last endpoints from the control plane: retry registering for a minute.
i=0
until code=$(call -X POST "$api/auth/register" -H 'Content-Type: application/json' \
  -d "$(jq -n --arg e "$email" --arg p "$password" '{email: $e, password: $p, name: "K8s Buyer"}')") && [ "$code" = 201 ]; do
  i=$((i + 1))
  [ "$i" -le 60 ] || { echo "k8s-e2e: register: $code $(cat "$work/body")" >&2; exit 1; }
  sleep 1
done
code=$(call -X POST "$api/auth/login" -H 'Content-Type: application/json' \
  -d "$(jq -n --arg e "$email" --arg p "$password" '{email: $e, password: $p}')")
token=$(jq -r .access_token "$work/body")
[ "$code" = 200 ] && [ -n "$token" ] || { echo "k8s-e2e: login: $code $(cat "$work/body")" >&2; exit 1; }
code=$(call "$api/products?limit=50")
product=$(jq -r '[.items[] | select(.stock > 0)][0].id // empty' "$work/body")
[ "$code" = 200 ] && [ -n "$product" ] || { echo "k8s-e2e: no product in stock: $code $(cat "$work/body")" >&2; exit 1; }
code=$(call -X POST "$api/orders" -H "Authorization: Bearer $token" -H "Idempotency-Key: k8s-e2e-$(openssl rand -hex 8)" \
  -H 'Content-Type: application/json' \
  -d "$(jq -n --arg p "$product" '{items: [{product_id: $p, quantity: 1}], payment: {card_token: "tok_visa"}}')")
status=$(jq -r .status "$work/body")
order=$(jq -r .id "$work/body")
[ "$code" = 201 ] && [ "$status" = CONFIRMED ] || { echo "k8s-e2e: checkout: $code $(cat "$work/body"); want 201 CONFIRMED" >&2; exit 1; }
code=$(call "$api/orders/$order" -H "Authorization: Bearer $token")
[ "$code" = 200 ] || { echo "k8s-e2e: reading order $order back: $code" >&2; exit 1; }
echo "k8s-e2e: PASS: order $order CONFIRMED through the edge on $context (namespace $ns, mesh ${MESH_MODE:-sidecar})"
