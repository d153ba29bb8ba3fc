#!/bin/sh
# One-shot of docker compose (service consul-init): runs once consul is
# healthy and before anything that talks to it, at every `up`. With the
# initial management token it
#
#   1. writes the ACL policies consul/acl/controlplane.hcl and prometheus.hcl;
#   2. makes one token per consumer and keeps it in the volume
#      consul-tokens as <consumer>/token, which only that consumer mounts
#      (at /consul/acl, CONSUL_HTTP_TOKEN_FILE=/consul/acl/token):
#        auth user product order payment notification edge
#                      the service identity of that name (an app and its
#                      sidecar share it)
#        controlplane  the policy meshop-controlplane
#        prometheus    the policy meshop-prometheus
#      A token whose file still works keeps its secret and is updated to
#      what this script says; otherwise a new one is made;
#   3. copies the Connect CA's roots to /consul/ca/connect-ca.pem (volume
#      consul-ca), which Envoys check the control plane's certificate with;
#   4. applies the config entries consul/config/*.json (service-defaults,
#      intentions), as localenv.ApplyConfigEntries does for make run.
set -eu
: "${CONSUL_MANAGEMENT_TOKEN:?CONSUL_MANAGEMENT_TOKEN comes from .env, which make up writes}"
export CONSUL_HTTP_ADDR="${CONSUL_HTTP_ADDR:-https://consul:8501}"
export CONSUL_CACERT="${CONSUL_CACERT:-/consul/ca/consul-agent-ca.pem}"
export CONSUL_HTTP_TOKEN="$CONSUL_MANAGEMENT_TOKEN"
conf=/etc/meshop/consul
tokens=/consul/tokens

# call TOKEN METHOD PATH [curl args...]: one call to Consul's HTTP API.
call() {
  token=$1 method=$2 path=$3
  shift 3
  curl -fsS --cacert "$CONSUL_CACERT" -X "$method" -H "X-Consul-Token: $token" "$@" "$CONSUL_HTTP_ADDR$path"
}

# api METHOD PATH [curl args...]: a call with the management token.
api() {
  call "$CONSUL_HTTP_TOKEN" "$@"
}

# policy NAME FILE: creates or updates the ACL policy NAME with FILE's rules.
policy() {
  body=$(jq -n --arg name "$1" --rawfile rules "$2" '{Name: $name, Rules: $rules}')
  id=$(api GET "/v1/acl/policy/name/$1" 2>/dev/null | jq -r .ID) || id=
  api PUT "/v1/acl/policy${id:+/$id}" -d "$body" >/dev/null
  echo "init.sh: policy $1 ($2)"
}

# token CONSUMER JQ: keeps a token in $tokens/CONSUMER/token whose
# Description, Policies and ServiceIdentities are the jq program JQ's.
token() {
  file=$tokens/$1/token
  body=$(jq -n --arg consumer "$1" "{Description: (\"meshop \" + \$consumer)} + ($2)")
  accessor=
  if [ -s "$file" ]; then
    accessor=$(call "$(cat "$file")" GET /v1/acl/token/self 2>/dev/null | jq -r .AccessorID) || accessor=
  fi
  if [ "$accessor" = "$management" ]; then
    echo "init.sh: $file holds the management token; remove it" >&2
    exit 1
  fi
  if [ -n "$accessor" ]; then
    api PUT "/v1/acl/token/$accessor" -d "$body" >/dev/null
    echo "init.sh: token $1 updated"
    return
  fi
  secret=$(api PUT /v1/acl/token -d "$body" | jq -er .SecretID)
  mkdir -p "$tokens/$1"
  printf '%s\n' "$secret" >"$file.new"
  # Read by Envoy (uid 101) and the apps (uid 65532); no one else mounts it.
  chmod 0444 "$file.new"
  mv "$file.new" "$file"
  echo "init.sh: token $1 created"
}

management=$(api GET /v1/acl/token/self | jq -er .AccessorID)
policy meshop-controlplane "$conf/acl/controlplane.hcl"
policy meshop-prometheus "$conf/acl/prometheus.hcl"

for svc in auth user product order payment notification edge; do
  token "$svc" "{ServiceIdentities: [{ServiceName: \"$svc\"}]}"
done
token controlplane '{Policies: [{Name: "meshop-controlplane"}]}'
token prometheus '{Policies: [{Name: "meshop-prometheus"}]}'

# The Connect CA is made when the server first leads: wait for its roots.
i=0
until api GET '/v1/connect/ca/roots?pem=true' >/consul/ca/connect-ca.pem.new 2>/dev/null \
  && grep -q 'BEGIN CERTIFICATE' /consul/ca/connect-ca.pem.new; do
  i=$((i + 1))
  if [ "$i" -ge 60 ]; then
    echo "init.sh: Consul's Connect CA has no roots after 60s" >&2
    exit 1
  fi
  sleep 1
done
chmod 0644 /consul/ca/connect-ca.pem.new
mv /consul/ca/connect-ca.pem.new /consul/ca/connect-ca.pem
echo "init.sh: Connect CA roots in /consul/ca/connect-ca.pem"

for entry in "$conf"/config/*.json; do
  consul config write "$entry"
done
echo "init.sh: done"
