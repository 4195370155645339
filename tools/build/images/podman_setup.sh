#!/usr/bin/env bash
# Makes this machine able to build and run the images with podman, as root: Debian's podman,
# runc (crun refuses hosts with hybrid cgroups), debootstrap for base images, and a
# containers.conf that selects runc and sets no default ulimits (crun's and runc's setrlimit fail
# under some hosts' limits otherwise). Idempotent.
set -euo pipefail
need=()
for tool in podman runc debootstrap; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
conf=/etc/containers/containers.conf
if ! grep -q 'meshsearch' "$conf" 2>/dev/null; then
  mkdir -p /etc/containers
  cat >>"$conf" <<'CONF'
# meshsearch (tools/build/images/podman_setup.sh)
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
fi
