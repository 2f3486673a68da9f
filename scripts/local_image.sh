#!/usr/bin/env bash
# Builds ringsam's image where no registry can be reached: a Debian bookworm base made with
# debootstrap (cached), `docker import`ed, then k8s/Dockerfile's runtime stage on it with a binary
# built on this host (BINARY_SOURCE=context). The same Dockerfile users build from source.
#
#   scripts/local_image.sh [BINARY] [TAG]
#     BINARY  default target/debug/ringsam (what scripts/test.sh built, optimised test profile)
#     TAG     default ringsam:local
#   RINGSAM_IMAGE_CACHE  where the debootstrap tarball is kept (default ~/.cache/ringsam)
#
# Needs root (debootstrap), a Docker daemon, and a Debian mirror (deb.debian.org, or
# RINGSAM_DEBIAN_MIRROR). The binary must be built against bookworm's glibc or older.
set -euo pipefail
cd "$(dirname "$0")/.."

binary=${1:-target/debug/ringsam}
tag=${2:-ringsam:local}
base=ringsam-base:bookworm
cache=${RINGSAM_IMAGE_CACHE:-$HOME/.cache/ringsam}
mirror=${RINGSAM_DEBIAN_MIRROR:-http://deb.debian.org/debian}

[ -x "$binary" ] || { echo "local_image.sh: no binary at $binary (cargo build first)" >&2; exit 2; }
command -v docker >/dev/null || { echo "local_image.sh: docker not found" >&2; exit 2; }
# One build at a time (tests build images in parallel): the base and .docker-bin are shared.
mkdir -p "$cache"
exec 9>"$cache/local_image.lock"
flock 9

if ! docker image inspect "$base" >/dev/null 2>&1; then
    tarball=$cache/debootstrap-bookworm-minbase.tar
    if [ ! -s "$tarball" ]; then
        command -v debootstrap >/dev/null || apt-get install -y -q debootstrap >/dev/null
        mkdir -p "$cache"
        rootfs=$(mktemp -d)
        trap 'rm -rf "$rootfs"' EXIT
        echo "local_image.sh: debootstrap bookworm (minbase + tini, ca-certificates) into $rootfs" >&2
        debootstrap --variant=minbase --include=tini,ca-certificates bookworm "$rootfs" "$mirror" >&2
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
        tar -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
    fi
    echo "local_image.sh: importing $tarball as $base" >&2
    docker import "$tarball" "$base" >/dev/null
fi

mkdir -p .docker-bin
cp "$binary" .docker-bin/ringsam
# BuildKit when the CLI has buildx; otherwise the legacy builder, whose unused build stage then
# runs (as a no-op) on the local base rather than pulling a Rust image.
buildkit=0
docker buildx version >/dev/null 2>&1 && buildkit=1
DOCKER_BUILDKIT=$buildkit docker build -q -f k8s/Dockerfile --build-arg BINARY_SOURCE=context \
    --build-arg RUNTIME_BASE="$base" --build-arg RUST_IMAGE="$base" -t "$tag" . >&2
echo "$tag"
