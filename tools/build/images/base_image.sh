#!/usr/bin/env bash
# Builds a base image from Debian's packages, for machines that cannot pull from registries:
# `debootstrap --variant=minbase` of SUITE with the packages given, imported into podman as
# NAME. Skips the work when NAME exists. Usage: base_image.sh NAME SUITE PACKAGE,PACKAGE,...
set -euo pipefail
name=$1 suite=$2 packages=$3
if podman image exists "$name"; then exit 0; fi
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include="$packages" "$suite" "$root" http://deb.debian.org/debian >/dev/null
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | podman import --change 'CMD ["/bin/bash"]' - "$name" >/dev/null
echo "built base image $name from Debian $suite"
