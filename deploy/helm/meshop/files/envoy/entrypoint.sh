#!/bin/sh
# Entrypoint of Meshop's Envoys (sidecars and edge) in docker compose:
#
#   sh entrypoint.sh -c <bootstrap template> [other Envoy flags...]
#
# renders the template named by -c with this node's Consul ACL token
# ($CONSUL_HTTP_TOKEN_FILE, render-bootstrap.sh) into $TMPDIR (default
# /tmp), readable by Envoy only, and starts Envoy with the rendered file
# in its place and every other flag unchanged. In the Envoy image it hands
# over to the image's own entrypoint, which drops root for the envoy user;
# elsewhere it runs the envoy on PATH.
set -eu
here=$(dirname "$0")
rendered=${TMPDIR:-/tmp}/envoy-bootstrap.yaml
umask 077

prev= found=
for arg do
  shift
  if [ "$prev" = -c ]; then
    sh "$here/render-bootstrap.sh" "$arg" >"$rendered"
    arg=$rendered found=1
  fi
  set -- "$@" "$arg"
  prev=$arg
done
if [ -z "$found" ]; then
  echo "entrypoint.sh: no bootstrap template given (-c <file>)" >&2
  exit 1
fi

if [ -x /docker-entrypoint.sh ]; then
  if [ "$(id -u)" = 0 ] && id envoy >/dev/null 2>&1; then
    chown envoy "$rendered"
  fi
  exec /docker-entrypoint.sh envoy "$@"
fi
exec envoy "$@"
