#!/usr/bin/env bash
# Runs the cpu-smoke overlay's Job as Kubernetes would, without a cluster: its pods are containers
# of the real image on a Docker network, started from the rendered manifest (env, args, mounts,
# security context, limits: scripts/k8s_pod.py), each named and aliased as the headless Service's
# DNS name (`ringsam-0.ringsam`, …), with a host folder as the ReadWriteMany volume and the Secret
# made by `ringsam certs --k8s-secret`; each scenario's fresh volume is prepared by the
# extras/volume-setup Job's pod, as on storage that ignores fsGroup. Then:
#   1. the job trains to the end (the reference);
#   2. `docker kill` of pod 1 mid-run, and a replacement under the same name with a different IP
#      (as the Job controller does): the workers recover through the elastic path and end with
#      the reference's final parameters, bit for bit;
#   3. `docker stop` (SIGTERM, the pod's grace period) of pod 1 alone, as a node drain does: it
#      exits 143 after a checkpoint while pod 0 goes on; its replacement rejoins, and the run
#      ends with the reference's parameters;
#   4. `docker stop` of every pod: each exits 143 after a checkpoint; new pods resume from it and
#      again end with the reference's parameters;
#   5. pod 1 given a certificate from another CA: it is refused, and both pods' logs say why.
#
#   scripts/k8s_local.sh [BINARY]      (default target/debug/ringsam; tests/container.rs runs it)
#
# Needs Docker and root (the image: scripts/local_image.sh). About 3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
binary=${1:-target/debug/ringsam}
source scripts/k8s_tools.sh

id=$$
tag=ringsam:k8s-$id
work=$(mktemp -d /tmp/ringsam-k8s.XXXXXX)
network=ringsam-k8s-$id
pods=(ringsam-0 ringsam-1)
say() { echo "k8s_local: $*" >&2; }
cleanup() {
    docker rm -f "${pods[@]}" ringsam-volume-setup-0 >/dev/null 2>&1 || true
    docker network rm "$network" >/dev/null 2>&1 || true
    docker image rm -f "$tag" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
fail() {
    for p in "${pods[@]}"; do echo "--- $p" >&2; docker logs "$p" 2>&1 | tail -25 >&2 || true; done
    echo "k8s_local: FAILED: $*" >&2
    exit 1
}

scripts/local_image.sh "$binary" "$tag" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; fail "building the image"; }
"${KUBECTLS[0]}" kustomize k8s/overlays/cpu-smoke >"$work/job.yaml" 2>/dev/null
"${KUBECTLS[0]}" kustomize k8s/extras/volume-setup >"$work/setup.yaml" 2>/dev/null
# A network whose addresses this script picks, so that a replacement pod gets a new one.
for _ in 1 2 3 4 5; do
    net=10.213.$((RANDOM % 250)).
    docker network create --subnet "${net}0/24" "$network" >/dev/null 2>&1 && break
    net=
done
[ -n "$net" ] || fail "no free subnet for the pods' network"

# The Secret as `kubectl apply` would store it, files readable by the pods' fsGroup.
secret_dir() { # DIR [CLUSTER_SECRET]
    mkdir -p "$1/ringsam-certs"
    "$binary" certs --nodes 2 --k8s-secret ringsam-certs --secret | "$K8S_PYTHON" -c '
import sys, yaml, os
d = yaml.safe_load(sys.stdin)
for k, v in d["stringData"].items():
    open(os.path.join(sys.argv[1], k), "w").write(v)' "$1/ringsam-certs"
    [ -z "${2:-}" ] || printf %s "$2" >"$1/ringsam-certs/cluster-secret"
    chown -R root:10001 "$1/ringsam-certs" && chmod 0750 "$1/ringsam-certs" && chmod 0440 "$1/ringsam-certs"/*
}

run_dir=/runs/cpu-smoke/lr_0.1/wd_0.0005/rho_0.05/seed_0
# start POD_INDEX IP VOLUMES SECRETS: the pod as the manifest says.
start() {
    local words
    mapfile -d '' words < <("$K8S_PYTHON" scripts/k8s_pod.py "$work/job.yaml" "$1" --image "$tag" \
        --network "$network" --ip "$2" --volumes "$3" --secrets "$4" 2>"$work/grace")
    "${words[@]}" >/dev/null
}
grace() { sed -n 's/^grace=//p' "$work/grace"; }
# fresh NAME: a new, empty volume for a scenario, root's as a new NFS export is (Docker, like
# such storage, ignores fsGroup), prepared by the extras/volume-setup Job's pod.
fresh() {
    local words
    mkdir -p "$work/$1/volumes/ringsam-shared"
    mapfile -d '' words < <("$K8S_PYTHON" scripts/k8s_pod.py "$work/setup.yaml" 0 --image "$tag" \
        --network "$network" --ip "${net}30" --volumes "$work/$1/volumes" --secrets "$work/$1/secrets" 2>/dev/null)
    "${words[@]}" >/dev/null
    [ "$(wait_exit ringsam-volume-setup-0 60)" = 0 ] || fail "the volume-setup pod failed: $(docker logs ringsam-volume-setup-0 2>&1)"
    docker rm ringsam-volume-setup-0 >/dev/null
    [ "$(stat -c %u "$work/$1/volumes/ringsam-shared/runs")" = 10001 ] || fail "volume-setup did not give runs/ to uid 10001"
}
wait_exit() { # POD SECONDS → its exit code
    local code
    code=$(timeout "$2" docker wait "$1" 2>/dev/null) || fail "$1 did not end within $2 s"
    echo "$code"
}
# Whether POD's log has PATTERN. Not `grep -q`: under pipefail, grep leaving at the first match
# can kill `docker logs` with SIGPIPE and fail the pipeline although the line is there.
logged() { # POD PATTERN
    docker logs "$1" 2>&1 | grep -- "$2" >/dev/null
}
wait_log() { # POD PATTERN SECONDS
    local t=0
    until logged "$1" "$2"; do
        sleep 0.5
        t=$((t + 1))
        [ $t -lt $(($3 * 2)) ] || fail "$1 never logged /$2/"
    done
}
# The final checkpoint's model, as bytes.
final_model() { # SCENARIO
    local dir="$work/$1/volumes/ringsam-shared$run_dir/checkpoints"
    local last
    last=$(ls -d "$dir"/checkpoint_* 2>/dev/null | sort -t_ -k2 -n | tail -1)
    [ -n "$last" ] || fail "no checkpoint in $dir"
    sha256sum <"$last/model.safetensors" | cut -d' ' -f1
}

# 1. The reference: both pods to the end.
fresh ref && secret_dir "$work/ref/secrets"
start 0 "${net}10" "$work/ref/volumes" "$work/ref/secrets"
start 1 "${net}11" "$work/ref/volumes" "$work/ref/secrets"
for p in "${pods[@]}"; do
    [ "$(wait_exit "$p" 600)" = 0 ] || fail "$p did not succeed"
done
logged ringsam-0 'test accuracy' || fail "pod 0 printed no test accuracy"
reference=$(final_model ref)
say "1. the job trained to the end: ok (final model sha256 ${reference:0:16}…)"
docker rm "${pods[@]}" >/dev/null

# 2. Pod 1 killed mid-run, replaced under its name with a new IP.
fresh kill && secret_dir "$work/kill/secrets"
start 0 "${net}10" "$work/kill/volumes" "$work/kill/secrets"
start 1 "${net}11" "$work/kill/volumes" "$work/kill/secrets"
wait_log ringsam-0 'step 20/' 300
docker kill ringsam-1 >/dev/null
docker rm ringsam-1 >/dev/null
start 1 "${net}21" "$work/kill/volumes" "$work/kill/secrets"
[ "$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' ringsam-1)" = "${net}21" ] || fail "the replacement kept its IP"
for p in "${pods[@]}"; do
    [ "$(wait_exit "$p" 600)" = 0 ] || fail "$p did not succeed after the replacement"
done
recovered=$(docker logs ringsam-0 2>&1 | grep -E 'generation [0-9]+: 2 replicas' | tail -1)
[ -n "$recovered" ] || fail "pod 0 logged no new generation of 2 replicas"
[ "$(final_model kill)" = "$reference" ] || fail "after the replacement, the final model differs from the reference"
say "2. pod 1 killed and replaced (new IP ${net}21): recovered, final model bitwise equal: ok (${recovered#*: })"
docker rm "${pods[@]}" >/dev/null

# 3. SIGTERM to pod 1 alone (a drained node): it leaves after a checkpoint, pod 0 goes on.
fresh drain && secret_dir "$work/drain/secrets"
start 0 "${net}10" "$work/drain/volumes" "$work/drain/secrets"
start 1 "${net}11" "$work/drain/volumes" "$work/drain/secrets"
wait_log ringsam-0 'step 20/' 300
docker stop -t "$(grace)" ringsam-1 >/dev/null
code=$(docker inspect -f '{{.State.ExitCode}}' ringsam-1)
[ "$code" = 143 ] || fail "ringsam-1: exit code $code after SIGTERM, expected 143"
sleep 2
[ "$(docker inspect -f '{{.State.Running}}' ringsam-0)" = true ] || fail "pod 0 stopped with the drained pod 1"
docker rm ringsam-1 >/dev/null
start 1 "${net}22" "$work/drain/volumes" "$work/drain/secrets"
for p in "${pods[@]}"; do
    [ "$(wait_exit "$p" 600)" = 0 ] || fail "$p did not succeed after the drain"
done
[ "$(final_model drain)" = "$reference" ] || fail "after the drain, the final model differs from the reference"
say "3. SIGTERM to pod 1 alone (a drain): it exited 143, pod 0 went on, the new pod 1 rejoined; final model bitwise equal: ok"
docker rm "${pods[@]}" >/dev/null

# 4. SIGTERM to every pod, then new pods resume.
fresh stop && secret_dir "$work/stop/secrets"
start 0 "${net}10" "$work/stop/volumes" "$work/stop/secrets"
start 1 "${net}11" "$work/stop/volumes" "$work/stop/secrets"
wait_log ringsam-0 'step 20/' 300
for p in "${pods[@]}"; do docker stop -t "$(grace)" "$p" >/dev/null & done
wait
for p in "${pods[@]}"; do
    code=$(docker inspect -f '{{.State.ExitCode}}' "$p")
    [ "$code" = 143 ] || fail "$p: exit code $code after SIGTERM, expected 143"
done
# The pod signalled first writes (or votes) the checkpoint; the other may get its signal while
# re-forming after the first has left, and then has nothing newer to write.
logged ringsam-0 'checkpoint at step' || logged ringsam-1 'checkpoint at step' \
    || fail "no checkpoint on SIGTERM"
docker rm "${pods[@]}" >/dev/null
start 0 "${net}12" "$work/stop/volumes" "$work/stop/secrets"
start 1 "${net}13" "$work/stop/volumes" "$work/stop/secrets"
for p in "${pods[@]}"; do
    [ "$(wait_exit "$p" 600)" = 0 ] || fail "$p did not succeed after the restart"
done
resumed=$(docker logs ringsam-0 2>&1 | grep -E 'checkpoint' | head -1)
[ "$(final_model stop)" = "$reference" ] || fail "after the restart, the final model differs from the reference"
say "4. SIGTERM to every pod: exit 143 with a checkpoint; new pods resumed and ended bitwise equal: ok ($resumed)"
docker rm "${pods[@]}" >/dev/null

# 5. Pod 1 with a certificate of another CA (the cluster secret right): refused, and said why.
fresh cert && secret_dir "$work/cert/secrets"
secret_dir "$work/cert/other" "$(cat "$work/cert/secrets/ringsam-certs/cluster-secret")"
start 0 "${net}10" "$work/cert/volumes" "$work/cert/secrets"
start 1 "${net}11" "$work/cert/volumes" "$work/cert/other"
wait_log ringsam-0 'refused' 120
wait_log ringsam-1 'certificate' 120
say "5. a wrong certificate is refused: ok"
say "   pod 0: $(docker logs ringsam-0 2>&1 | grep -m1 refused)"
say "   pod 1: $(docker logs ringsam-1 2>&1 | grep -m1 certificate)"
say "all passed"
