#!/bin/sh
# Entrypoint of compose's consul: makes the development TLS material when
# there is none (or it is older than 300 days; certificates are valid 365),
# then runs the image's own entrypoint, which starts the agent as the
# consul user with compose/server.hcl and the initial management token.
#
#   /consul/ca/consul-agent-ca.pem   volume consul-ca: the development CA that
#                                    signed Consul's HTTPS certificate; every
#                                    client mounts it read-only (CONSUL_CACERT)
#   /consul/tls/server{,-key}.pem    volume consul-tls: Consul's certificate
#                                    (server.dc1.consul, consul, localhost,
#                                    127.0.0.1) and key, mounted here only
#
# The CA's key is deleted once it has signed the server's certificate, so
# nothing else can ever be signed with it.
set -eu
: "${CONSUL_MANAGEMENT_TOKEN:?CONSUL_MANAGEMENT_TOKEN comes from .env, which make up writes}"
if ! echo "$CONSUL_MANAGEMENT_TOKEN" | grep -Eqx '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}'; then
  echo "start.sh: CONSUL_MANAGEMENT_TOKEN in .env is not a UUID (Consul's tokens are)" >&2
  exit 1
fi
ca=/consul/ca
tls=/consul/tls

if [ -z "$(find "$tls/server.pem" -mtime -300 2>/dev/null)" ]; then
  work=$(mktemp -d)
  (
    cd "$work"
    consul tls ca create -domain=consul -days=3650 >/dev/null
    consul tls cert create -server -dc=dc1 -domain=consul -additional-dnsname=consul -days=365 >/dev/null
    cp consul-agent-ca.pem "$ca/consul-agent-ca.pem"
    cp dc1-server-consul-0.pem "$tls/server.pem"
    cp dc1-server-consul-0-key.pem "$tls/server-key.pem"
  )
  rm -rf "$work"
  chmod 0644 "$ca/consul-agent-ca.pem" "$tls/server.pem"
  chmod 0600 "$tls/server-key.pem"
  chown consul:consul "$tls/server-key.pem"
  echo "start.sh: made a development CA and Consul's certificate"
fi

exec docker-entrypoint.sh agent -config-file=/etc/meshop/consul/compose/server.hcl \
  -hcl="acl { tokens { initial_management = \"$CONSUL_MANAGEMENT_TOKEN\", agent = \"$CONSUL_MANAGEMENT_TOKEN\" } }"
