#!/usr/bin/env bash
# `make images`: builds every image with podman, as root, where registries cannot be pulled from:
# base images from Debian's packages (base_image.sh), the host's CA bundle mounted into each
# build (PyPI behind this network's TLS proxy), and torch from the local CPU wheel directory
# (TORCH_WHEELS, default /opt/wheels) when it holds one, else from PyPI's CPU index.
# Usage: build.sh [TAG]  ->  localhost/meshsearch-{api,worker,embedder,search,postgres,redis}:TAG
set -euo pipefail
tag=${1:-dev}
root=$(cd "$(dirname "$0")/../../.." && pwd)
here=$root/tools/build/images
"$here/podman_setup.sh"
"$here/base_image.sh" localhost/meshsearch-base-python:bookworm bookworm python3,python3-venv,ca-certificates
"$here/base_image.sh" localhost/meshsearch-base-postgres:trixie trixie postgresql-17,postgresql-17-pgvector
"$here/base_image.sh" localhost/meshsearch-base-redis:bookworm bookworm redis-server

ca=/etc/ssl/certs/ca-certificates.crt
build=(podman build --format docker --network host --build-arg BASE_IMAGE=localhost/meshsearch-base-python:bookworm)
[[ -f $ca ]] && build+=(-v "$ca:$ca:ro")
wheels=${TORCH_WHEELS:-/opt/wheels}
torch=()
if compgen -G "$wheels/torch-*.whl" >/dev/null; then
  torch=(-v "$wheels:/wheels:ro" --build-arg "TORCH_PIP_ARGS=--no-index --find-links /wheels")
fi
cd "$root"
"${build[@]}" -f services/api/Dockerfile --target api -t "localhost/meshsearch-api:$tag" .
"${build[@]}" -f services/api/Dockerfile --target worker -t "localhost/meshsearch-worker:$tag" .
"${build[@]}" -f services/search/Dockerfile -t "localhost/meshsearch-search:$tag" .
"${build[@]}" "${torch[@]}" -f services/embedder/Dockerfile -t "localhost/meshsearch-embedder:$tag" .
podman build --format docker -f "$here/postgres.Containerfile" -t "localhost/meshsearch-postgres:$tag" "$here"
podman build --format docker -f "$here/redis.Containerfile" -t "localhost/meshsearch-redis:$tag" "$here"
podman images --filter "reference=localhost/meshsearch-*:$tag" --format '{{.Repository}}:{{.Tag}} {{.Size}}'
