#!/bin/sh
# Make the image's base from Debian's own packages, for machines that reach Debian's
# package archive but no container registry (`FROM python:...` cannot be pulled there).
#
#   scripts/make_base_image.sh            prints the tag of the base, building it if needed
#
# The base is Debian bookworm (minbase) with python3 (3.11, the version the lock files
# are compiled for), python3-venv and ca-certificates: the same Python minor version and
# Debian release as the official python:3.11-slim-bookworm image the Dockerfile uses by
# default. The tag carries a hash of this script, so an edited package list makes a new
# base, and an existing one is reused (mmdebstrap takes ~15 s, `docker import` a little
# more). Progress goes to stderr; stdout is the tag alone, for `--build-arg BASE=$(...)`.
set -eu

SUITE=bookworm
PACKAGES=python3,python3-venv,ca-certificates
HERE=$(cd "$(dirname "$0")" && pwd)
DIGEST=$( (cat "$0"; echo "$SUITE $PACKAGES") | sha256sum | cut -c1-12)
TAG="guardrail-base:$SUITE-$DIGEST"

if docker image inspect "$TAG" >/dev/null 2>&1; then
    echo "base image $TAG: cached" >&2
    echo "$TAG"
    exit 0
fi
command -v mmdebstrap >/dev/null 2>&1 || {
    echo "error: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2; exit 2; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT INT TERM
echo "base image $TAG: mmdebstrap $SUITE ($PACKAGES)" >&2
# --variant=minbase: essential packages and apt only (no compiler, no man pages).
mmdebstrap --quiet --variant=minbase --include="$PACKAGES" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook='rm -rf "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
    "$SUITE" "$WORK/base.tar" >&2
docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' \
    "$WORK/base.tar" "$TAG" >&2
echo "base image $TAG: built from $HERE/$(basename "$0")" >&2
echo "$TAG"
