#!/usr/bin/env bash
# Writes k8s/overlays/dev/secrets.env (never committed) with fresh random secrets, unless it
# exists: the dev overlay's Secret is generated from it. Usage: tools/build/k8s_dev_secrets.sh [DIR]
set -euo pipefail
dir="${1:-$(dirname "$0")/../../k8s/overlays/dev}"
target="$dir/secrets.env"
[ -e "$target" ] && exit 0
random() { python3 -c 'import secrets; print(secrets.token_hex(24))'; }
password="$(random)"
search_password="$(random)"
jobs_password="$(random)"
# Each service connects as its own role to its own database (k8s/overlays/dev/postgres-roles.sh).
jobs_url="postgresql://meshsearch_jobs:${jobs_password}@meshsearch-postgres:5432/meshsearch_jobs"
search_url="postgresql://meshsearch_search:${search_password}@meshsearch-postgres:5432/meshsearch_search"
# The shard servers (k8s/overlays/dev/postgres-shards.yaml): the same roles, one pod each.
shard_urls=""
for index in 0 1; do
  shard_urls="${shard_urls:+$shard_urls,}postgresql://meshsearch_search:${search_password}@meshsearch-postgres-shard-${index}.meshsearch-postgres-shard:5432/meshsearch_search"
done
redis_password="$(random)"
umask 077
cat > "$target" <<SECRETS
MESHSEARCH_API_BOOTSTRAP_KEY=$(random)
MESHSEARCH_API_JOBS_DATABASE_URL=${jobs_url}
MESHSEARCH_WORKER_JOBS_DATABASE_URL=${jobs_url}
MESHSEARCH_SEARCH_DATABASE_URL=${search_url}
MESHSEARCH_SEARCH_SHARD_URLS=${shard_urls}
MESHSEARCH_CALLER_TOKEN=$(random)
POSTGRES_PASSWORD=${password}
POSTGRES_SEARCH_PASSWORD=${search_password}
POSTGRES_JOBS_PASSWORD=${jobs_password}
MESHSEARCH_REDIS_PASSWORD=${redis_password}
MESHSEARCH_API_REDIS_URL=redis://:${redis_password}@meshsearch-redis:6379/0
MESHSEARCH_API_STATE_REDIS_URL=redis://:${redis_password}@meshsearch-redis-state:6379/0
SECRETS
echo "wrote $target"
