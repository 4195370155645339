#!/bin/sh
# Run once by the PostgreSQL image on a fresh data directory (from /docker-entrypoint-initdb.d):
# a role and a database per user of the server, the search service's and the jobs' (the api and
# its workers), each database closed to every other role, so the search service cannot read API
# keys or jobs. The embedded stack makes the same (tools/cli/src/meshsearch_cli/database_roles.py).
# compose.yaml mounts this file; the dev overlay mounts it from a ConfigMap.
set -eu
: "${SEARCH_DB_PASSWORD:?set SEARCH_DB_PASSWORD to a secret}"
: "${JOBS_DB_PASSWORD:?set JOBS_DB_PASSWORD to a secret}"
psql -v ON_ERROR_STOP=1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" \
  -v search_password="$SEARCH_DB_PASSWORD" -v jobs_password="$JOBS_DB_PASSWORD" \
  -v owner_db="$POSTGRES_DB" <<'SQL'
CREATE ROLE meshsearch_search LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'search_password';
CREATE ROLE meshsearch_jobs LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'jobs_password';
CREATE DATABASE meshsearch_search OWNER meshsearch_search;
CREATE DATABASE meshsearch_jobs OWNER meshsearch_jobs;
REVOKE ALL ON DATABASE meshsearch_search, meshsearch_jobs, :"owner_db" FROM PUBLIC;
\connect meshsearch_search
CREATE EXTENSION IF NOT EXISTS vector;
-- Sharded collections: the search service's database reaches the shard servers through it.
CREATE EXTENSION IF NOT EXISTS postgres_fdw;
GRANT USAGE ON FOREIGN DATA WRAPPER postgres_fdw TO meshsearch_search;
SQL
