#!/bin/sh
# compose-env.sh [FILE]: makes sure FILE (default .env) holds every secret
# docker-compose.yml needs, generating those it lacks and keeping those it
# has: they belong with the volumes (PostgreSQL's roles, Consul's ACLs),
# so an .env from an earlier checkout keeps its values and only gains the
# new ones. The file is readable by its owner only. make up and make e2e
# run it every time.
set -eu
env=${1:-.env}
umask 077
touch "$env"
chmod 600 "$env"

# URL-safe, so a password can sit in a DATABASE_URL or NATS_URL as it is.
password() { head -c 18 /dev/urandom | base64 | tr '+/' '-_'; }
# 32 random bytes, base64: auth's AES-256 key encryption key.
key() { head -c 32 /dev/urandom | base64; }
# NATS reads its config's $VARIABLE from the environment and parses the
# value as config (a leading digit or "-" would make it a number, or an
# error): a letter, then 128 random bits in hex, stays a string.
nats_password() { echo "n$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"; }
# Consul's tokens are UUIDs.
uuid() { od -An -N16 -tx1 /dev/urandom | tr -d ' \n' | sed -E 's/^(.{8})(.{4})(.{4})(.{4})(.{12})$/\1-\2-\3-\4-\5/'; }

added=
# need NAME GENERATOR: appends NAME=<new secret> unless FILE has NAME.
need() {
  if ! grep -q "^$1=" "$env"; then
    echo "$1=$($2)" >>"$env"
    added="$added $1"
  fi
}

need AUTH_KEY_ENCRYPTION_KEY key
need POSTGRES_PASSWORD password
for s in AUTH USER PRODUCT ORDER PAYMENT NOTIFICATION; do
  need "${s}_DB_PASSWORD" password
done
need CONSUL_MANAGEMENT_TOKEN uuid
need NATS_ADMIN_PASSWORD nats_password
for s in AUTH USER PRODUCT ORDER PAYMENT NOTIFICATION; do
  need "${s}_NATS_PASSWORD" nats_password
done

if [ -n "$added" ]; then
  echo "compose-env.sh: generated$added in $env (keep it as long as the volumes)"
fi
