#!/bin/sh
# The consul-init Job of Meshop's chart (image hashicorp/consul): the
# Kubernetes counterpart of compose's consul/compose/init.sh. With the
# Consul chart's bootstrap token (CONSUL_HTTP_TOKEN_FILE) it
#
#   1. writes the ACL policy meshop-controlplane (consul/acl/controlplane.hcl)
#      and a role of the same name holding it;
#   2. creates or updates the Kubernetes auth method CONSUL_AUTH_METHOD,
#      which checks ServiceAccount tokens with the TokenReview API (the
#      reviewer token of the Secret meshop-auth-method), and its binding
#      rules: a ServiceAccount of NAMESPACE named after a service (auth ...
#      notification, edge) logs in with that service's identity, the one
#      named controlplane with the role meshop-controlplane. Each pod logs
#      in at start (consul-login.sh) instead of reading a token file made
#      for it, as compose's apps do;
#   3. applies the config entries (service-defaults, intentions) of
#      consul/config, as compose's init.sh does.
set -eu
: "${CONSUL_HTTP_ADDR:?}" "${CONSUL_CACERT:?}" "${CONSUL_HTTP_TOKEN_FILE:?}" "${CONSUL_AUTH_METHOD:?}" "${NAMESPACE:?}" "${KUBERNETES_HOST:?}"
CONSUL_HTTP_TOKEN=$(cat "$CONSUL_HTTP_TOKEN_FILE")
export CONSUL_HTTP_TOKEN
# Where the Job mounts the ConfigMap meshop-consul and the reviewer's Secret.
conf=${MESHOP_CONSUL_FILES:-/etc/meshop/consul}
reviewer=${REVIEWER_DIR:-/var/run/secrets/meshop/reviewer}

# api METHOD PATH [curl args...]: one call to Consul's HTTP API (sh has
# no locals: it sets method and path).
api() {
  method=$1 path=$2
  shift 2
  curl -fsS --cacert "$CONSUL_CACERT" -X "$method" -H "X-Consul-Token: $CONSUL_HTTP_TOKEN" "$@" "$CONSUL_HTTP_ADDR$path"
}

# policy NAME FILE: creates or updates the ACL policy NAME with FILE's rules.
policy() {
  body=$(jq -n --arg name "$1" --rawfile rules "$2" '{Name: $name, Rules: $rules}')
  id=$(api GET "/v1/acl/policy/name/$1" 2>/dev/null | jq -r .ID) || id=
  api PUT "/v1/acl/policy${id:+/$id}" -d "$body" >/dev/null
  echo "consul-init.sh: policy $1"
}

# role NAME: creates or updates the ACL role NAME holding the policy NAME.
role() {
  body=$(jq -n --arg name "$1" '{Name: $name, Policies: [{Name: $name}]}')
  id=$(api GET "/v1/acl/role/name/$1" 2>/dev/null | jq -r .ID) || id=
  api PUT "/v1/acl/role${id:+/$id}" -d "$body" >/dev/null
  echo "consul-init.sh: role $1"
}

policy meshop-controlplane "$conf/acl/controlplane.hcl"
role meshop-controlplane

auth_method=$(jq -n --arg name "$CONSUL_AUTH_METHOD" --arg host "$KUBERNETES_HOST" \
  --rawfile ca "$reviewer/ca.crt" --rawfile jwt "$reviewer/token" \
  '{Name: $name, Type: "kubernetes", Description: "Meshop pods: a ServiceAccount named after its service",
    Config: {Host: $host, CACert: $ca, ServiceAccountJWT: $jwt}}')
if api GET "/v1/acl/auth-method/$CONSUL_AUTH_METHOD" >/dev/null 2>&1; then
  api PUT "/v1/acl/auth-method/$CONSUL_AUTH_METHOD" -d "$auth_method" >/dev/null
else
  api PUT /v1/acl/auth-method -d "$auth_method" >/dev/null
fi
echo "consul-init.sh: auth method $CONSUL_AUTH_METHOD"

# The binding rules are this script's alone: replace them all.
for id in $(api GET "/v1/acl/binding-rules?authmethod=$CONSUL_AUTH_METHOD" | jq -r '.[].ID'); do
  api DELETE "/v1/acl/binding-rule/$id" >/dev/null
done
# rule SERVICEACCOUNT BINDTYPE BINDNAME
rule() {
  body=$(jq -n --arg m "$CONSUL_AUTH_METHOD" --arg sel "serviceaccount.namespace==\"$NAMESPACE\" and serviceaccount.name==\"$1\"" \
    --arg type "$2" --arg name "$3" '{AuthMethod: $m, Selector: $sel, BindType: $type, BindName: $name}')
  api PUT /v1/acl/binding-rule -d "$body" >/dev/null
  echo "consul-init.sh: $NAMESPACE/$1 logs in as $2 $3"
}
for svc in auth user product order payment notification edge; do
  rule "$svc" service "$svc"
done
rule controlplane role meshop-controlplane

for entry in "$conf"/config/*.json; do
  consul config write "$entry"
done
echo "consul-init.sh: done"
