#!/bin/sh
# One database and one role per service (DESIGN §4): each service owns its
# schema and cannot reach another's data. Each role's password is a
# generated secret, <SERVICE>_DB_PASSWORD, that `make up` writes to .env
# and compose gives both to this script and to the service's DATABASE_URL.
# Runs once, when the postgres-data volume is empty (`make down` empties
# it). Identifiers are quoted: "user" is a reserved word.
set -eu

for service in auth user product order payment notification; do
  var="$(echo "$service" | tr '[:lower:]' '[:upper:]')_DB_PASSWORD"
  eval "password=\${$var:-}"
  if [ -z "$password" ]; then
    echo "01-meshop.sh: $var is not set (make up writes it to .env)" >&2
    exit 1
  fi
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -v role="$service" -v password="$password" <<'SQL'
CREATE ROLE :"role" LOGIN PASSWORD :'password';
CREATE DATABASE :"role" OWNER :"role";
REVOKE ALL ON DATABASE :"role" FROM PUBLIC;
SQL
done
