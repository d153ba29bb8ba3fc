#!/bin/sh
# Init container of every Meshop pod on Kubernetes (image hashicorp/consul).
# Consul's chart runs a client agent on every node; this talks to the one
# of the pod's node (CONSUL_HTTP_ADDR=https://<host IP>:8501) and
#
#   1. logs the pod's ServiceAccount in with the Kubernetes auth method
#      CONSUL_AUTH_METHOD (the consul-init Job made it): the ServiceAccount
#      is named after the service, so the token carries that service's
#      identity (the control plane's: its policy). The token goes to
#      CONSUL_HTTP_TOKEN_FILE, on an in-memory volume of this pod only,
#      where compose's consul-init puts it in a volume;
#   2. copies the Connect CA's roots to CONNECT_CA_ROOTS (default
#      /consul/ca/connect-ca.pem, memory too), which Envoys check the
#      control plane's certificate with;
#   3. with GRPC_XDS_BOOTSTRAP set (proxyless mode), writes the app's gRPC
#      xDS bootstrap there, its node id the pod's name (POD_NAME): the
#      template grpc-xds-bootstrap.json with @INSTANCE_ID@ and @SERVICE@
#      replaced.
# SERVICEACCOUNT_TOKEN (default /var/run/secrets/meshop/serviceaccount/token)
# is the projected ServiceAccount token it logs in with.
# Until consul-init has run, the login fails and Kubernetes retries this
# container with its backoff.
set -eu
: "${SERVICE:?}" "${CONSUL_AUTH_METHOD:?}" "${CONSUL_HTTP_TOKEN_FILE:?}" "${POD_NAME:?}"
here=$(dirname "$0")

# A pod name and a service name are DNS labels; anything else must not
# reach the bootstrap.
case $POD_NAME$SERVICE in
  *[!a-z0-9-]*) echo "consul-login.sh: POD_NAME $POD_NAME or SERVICE $SERVICE is not a DNS label" >&2; exit 1 ;;
esac

umask 022
tmp=$CONSUL_HTTP_TOKEN_FILE.new
consul login -method="$CONSUL_AUTH_METHOD" \
  -bearer-token-file="${SERVICEACCOUNT_TOKEN:-/var/run/secrets/meshop/serviceaccount/token}" \
  -token-sink-file="$tmp" \
  -meta "pod=$POD_NAME"
# Read by Envoy (uid 101) and the app (uid 65532); only this pod mounts it.
chmod 0444 "$tmp"
mv "$tmp" "$CONSUL_HTTP_TOKEN_FILE"
echo "consul-login.sh: $SERVICE logged in as pod $POD_NAME"

roots=${CONNECT_CA_ROOTS:-/consul/ca/connect-ca.pem}
curl -fsS --cacert "$CONSUL_CACERT" -H "X-Consul-Token: $(cat "$CONSUL_HTTP_TOKEN_FILE")" \
  "$CONSUL_HTTP_ADDR/v1/connect/ca/roots?pem=true" >"$roots.new"
grep -q 'BEGIN CERTIFICATE' "$roots.new"
chmod 0444 "$roots.new"
mv "$roots.new" "$roots"
echo "consul-login.sh: Connect CA roots in $roots"

if [ -n "${GRPC_XDS_BOOTSTRAP:-}" ]; then
  sed -e "s/@INSTANCE_ID@/$POD_NAME/g" -e "s/@SERVICE@/$SERVICE/g" "$here/grpc-xds-bootstrap.json" >"$GRPC_XDS_BOOTSTRAP.new"
  chmod 0444 "$GRPC_XDS_BOOTSTRAP.new"
  mv "$GRPC_XDS_BOOTSTRAP.new" "$GRPC_XDS_BOOTSTRAP"
  echo "consul-login.sh: gRPC xDS bootstrap in $GRPC_XDS_BOOTSTRAP"
fi
