#!/usr/bin/env bash
# Checks ringsam's container image as a pod would run it (issue 21's first part; the Job's pods
# come with the manifests): built by scripts/local_image.sh from BINARY, it runs as a non-root
# user, trains the quickstart, and on `docker stop` (SIGTERM to tini, PID 1, forwarded to
# ringsam) writes a checkpoint and exits 143; a new container on the same volume resumes it.
#
#   scripts/image_check.sh [BINARY]      (default target/debug/ringsam)
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/ringsam}
tag=ringsam:check-$$
volume=ringsam-check-$$
name=ringsam-check-$$
cleanup() {
    docker rm -f "$name" >/dev/null 2>&1 || true
    docker volume rm -f "$volume" >/dev/null 2>&1 || true
    docker image rm -f "$tag" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() { echo "image_check: FAILED: $*" >&2; exit 1; }

scripts/local_image.sh "$binary" "$tag" >/dev/null 2>/tmp/ringsam-image-build.$$ || { cat /tmp/ringsam-image-build.$$ >&2; fail "building the image"; }
rm -f /tmp/ringsam-image-build.$$
[ "$(docker run --rm --entrypoint id "$tag" -u)" = 10001 ] || fail "the image does not run as uid 10001"
version=$(docker run --rm "$tag" --version)
[[ $version == "ringsam "* ]] || fail "--version printed: $version"
quickstart=$(docker run --rm "$tag" train --max_steps 2 --output_dir /runs 2>&1) || fail "the quickstart failed: $quickstart"
grep -q 'final checkpoint' <<<"$quickstart" || fail "the quickstart did not train: $quickstart"
echo "image_check: non-root, --version and the quickstart: ok" >&2

docker volume create "$volume" >/dev/null
run=(train --dataset digits --model_name WideResnet16x2 --num_epochs 50 --output_dir /runs --log_every_steps 10)
docker run -d --name "$name" -v "$volume:/runs" "$tag" "${run[@]}" >/dev/null
for _ in $(seq 1 120); do  # until it has taken a step
    docker logs "$name" 2>&1 | grep -q 'step [0-9]' && break
    sleep 0.5
done
docker stop -t 60 "$name" >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' "$name")
logs=$(docker logs "$name" 2>&1)
[ "$code" = 143 ] || fail "docker stop: exit code $code, expected 143; log: $logs"
grep -q 'stop requested: checkpoint at step' <<<"$logs" || fail "no checkpoint on SIGTERM; log: $logs"
docker rm "$name" >/dev/null
after=$(docker run --rm -v "$volume:/runs" "$tag" "${run[@]}" --max_steps 1 2>&1) || true
resumed=$(grep 'resumed from' <<<"$after" || true)
[ -n "$resumed" ] || fail "a new container did not resume the checkpoint"
echo "image_check: SIGTERM checkpoint (exit 143) and resume: ok ($resumed)" >&2
