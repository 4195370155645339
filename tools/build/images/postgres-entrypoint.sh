#!/bin/sh
# Entry point of the PostgreSQL image `make images` builds from Debian's packages (for machines
# that cannot pull docker.io/pgvector/pgvector): the same POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB variables, data directory and /docker-entrypoint-initdb.d scripts as the official
# image, so compose.yaml runs either.
set -eu
bin=$(echo /usr/lib/postgresql/*/bin)
data=/var/lib/postgresql/data
if [ ! -s "$data/PG_VERSION" ]; then
  printf '%s\n' "$POSTGRES_PASSWORD" >/tmp/pwfile
  "$bin/initdb" -D "$data" --encoding=UTF8 --locale=C.UTF-8 -U "$POSTGRES_USER" --pwfile=/tmp/pwfile --auth-host=scram-sha-256 --auth-local=trust >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >>"$data/pg_hba.conf"
  "$bin/pg_ctl" -D "$data" -o "-c listen_addresses='' -c unix_socket_directories=/tmp" -w start >/dev/null
  if [ "$POSTGRES_DB" != postgres ]; then "$bin/createdb" -h /tmp -U "$POSTGRES_USER" "$POSTGRES_DB"; fi
  for script in /docker-entrypoint-initdb.d/*.sh; do  # as the official image runs them
    if [ -e "$script" ]; then PATH="$bin:$PATH" POSTGRES_USER="$POSTGRES_USER" POSTGRES_DB="$POSTGRES_DB" sh "$script"; fi
  done
  "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
fi
if [ "${1:-}" = postgres ]; then shift; fi  # `postgres -c name=value ...`, as the official image takes it
exec "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories=/tmp "$@"
