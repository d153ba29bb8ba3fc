#!/bin/sh
# render-bootstrap.sh TEMPLATE: prints the Envoy bootstrap TEMPLATE with
# the Consul ACL token held in the file $CONSUL_HTTP_TOKEN_FILE in place of
# @CONSUL_TOKEN@. Envoy cannot read a header value from a file, so the
# bootstrap is rendered at container start (entrypoint.sh) rather than
# kept with the token in it. The token must be a UUID, as Consul's are,
# so nothing else can slip into the YAML.
set -eu
template=${1:?usage: render-bootstrap.sh TEMPLATE}
: "${CONSUL_HTTP_TOKEN_FILE:?CONSUL_HTTP_TOKEN_FILE must name the file holding this node's Consul ACL token}"
token=$(cat "$CONSUL_HTTP_TOKEN_FILE")
case $token in
  *[!0-9a-f-]* | '') token= ;;
esac
if [ "${#token}" -ne 36 ]; then
  echo "render-bootstrap.sh: $CONSUL_HTTP_TOKEN_FILE does not hold a Consul ACL token (a UUID)" >&2
  exit 1
fi
if ! grep -q '@CONSUL_TOKEN@' "$template"; then
  echo "render-bootstrap.sh: $template has no @CONSUL_TOKEN@ to replace" >&2
  exit 1
fi
sed "s/@CONSUL_TOKEN@/$token/g" "$template"
