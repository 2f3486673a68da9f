#!/usr/bin/env bash
# Replays the hardening probes of issue 18 against a built binary and prints a table:
# probe, expected, observed. The next hardening pass starts from it.
#   scripts/probe.sh [BIN]    (default: target/release/ringsam; build it first)
# Each probe is bounded in time; everything runs on loopback and in a temporary directory.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=$(realpath "${1:-target/release/ringsam}")
[ -x "$BIN" ] || { echo "probe.sh: $BIN not found (cargo build --release first)" >&2; exit 2; }
T=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$T"' EXIT
TINY=(--dataset digits --model_name WideResnet10x1 --batch_size 64 --image_level_augmentations none --sam_rho 0.05)
export RINGSAM_THREADS=1
rows=()
row() { rows+=("$(printf '| %s | %s | %s |' "$1" "$2" "$3")"); }
# run NAME EXPECTED_RC SECONDS CMD...: records the exit code, the time and stderr's last line.
run() {
    local name=$1 want=$2 limit=$3; shift 3
    local t0=$(date +%s.%N)
    timeout "$limit" "$@" >"$T/out" 2>"$T/err"; local rc=$?
    local dt=$(printf '%.1f' "$(echo "$(date +%s.%N) - $t0" | bc)")
    local last=$(grep -v '^\s*$' "$T/err" | tail -n 1 | cut -c1-110 | tr '|' '/')
    row "$name" "exit $want" "exit $rc in ${dt}s: ${last}"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# 1. Another model in the same output directory.
"$BIN" train "${TINY[@]}" --max_steps 3 --output_dir "$T/r1" >/dev/null 2>&1
before=$(ls "$T/r1"/*/*/*/*/checkpoints | tr '\n' ' ')
run "1 restart with another model" 2 60 "$BIN" train --dataset digits --model_name WideResnet10x2 --batch_size 64 \
    --image_level_augmentations none --sam_rho 0.05 --max_steps 3 --output_dir "$T/r1"
after=$(ls "$T/r1"/*/*/*/*/checkpoints | tr '\n' ' ')
row "1 ... its checkpoints" "untouched" "before: $before; after: $after"

# 2. A rewrite interrupted between its two renames: .old and .tmp both complete.
c=$(ls -d "$T/r1"/*/*/*/*/checkpoints)
last=$(ls "$c" | sort -t_ -k2 -n | tail -n 1)
cp -r "$c/$last" "$c/$last.old"; mv "$c/$last" "$c/$last.tmp"
run "2 interrupted rewrite (.old + .tmp)" 0 60 "$BIN" train "${TINY[@]}" --max_steps 4 --output_dir "$T/r1"
row "2 ... recovered" "recovered" "$(grep -o 'recovered [^ ]*' "$T/err" | head -n 1)"

# 3. Every validation shard damaged: the epoch's checkpoint must survive the failed evaluation.
for split in train validation; do
    "$BIN" data pack --from tests/fixtures/imagenet_small/$split --to "$T/shards" --shard_size 64 --prefix $split >/dev/null 2>&1
done
for f in "$T"/shards/validation*.tar; do head -c "$(stat -c %s "$f")" /dev/zero | tr '\0' 'Z' > "$f"; done
run "3 evaluation fails (damaged validation)" 1 120 "$BIN" train --dataset imagenet --data_dir "$T/shards" --model_name Resnet14 \
    --image_size 32 --batch_size 64 --num_epochs 1 --output_dir "$T/r3"
row "3 ... the epoch's checkpoint" "kept" "$(ls "$T"/r3/*/*/*/*/checkpoints 2>/dev/null | tr '\n' ' ')"

# 4 and 6. Idle strangers on a waiting rank's port; refusals logged.
p0=$(free_port); p1=$(free_port); s=0123456789abcdef0123456789abcdef
RINGSAM_CLUSTER_SECRET=$s timeout 60 "$BIN" bench allreduce --transport tcp --rank 1 --peers 127.0.0.1:$p0,127.0.0.1:$p1 \
    --sizes 1M --iters 2 --timeout 20 >/dev/null 2>"$T/rank1.err" &
sleep 1
for i in $(seq 40); do exec {fd}<>/dev/tcp/127.0.0.1/$p1; done   # 40 idle connections, held open
printf 'garbage garbage garbage garbage garbage garbage garbage garbage' >/dev/tcp/127.0.0.1/$p1
RINGSAM_CLUSTER_SECRET=$s run "4 40 idle connections, then rank 0" 0 60 "$BIN" bench allreduce --transport tcp --rank 0 \
    --peers 127.0.0.1:$p0,127.0.0.1:$p1 --sizes 1M --iters 2 --timeout 20
wait
row "6 ... refusals logged" "a line per refusal" "$(grep -c 'refused a connection' "$T/rank1.err") lines, e.g. $(grep -m1 -o 'refused a connection.*' "$T/rank1.err" | cut -c1-80)"
row "5 QUIC Initials after formation" "refused (memory flat)" "not replayed here: crates/collective/tests/quic.rs a_formed_ring_accepts_no_one_else"
row "7 TCP: what a stranger receives" "a nonce, nothing keyed" "crates/collective/tests/tcp.rs a_stranger_receives_nothing_keyed_by_the_secret"
RINGSAM_CLUSTER_SECRET=short run "7 a short secret" 2 10 "$BIN" bench allreduce --transport tcp --rank 0 --peers 127.0.0.1:1,127.0.0.1:2

# 8. launch with a stopped worker: launch must end it and exit.
"$BIN" launch --nproc 2 --transport tcp -- "${TINY[@]}" --num_epochs 1000 --ring_timeout_seconds 3 --output_dir "$T/r8" >/dev/null 2>"$T/launch.err" &
lp=$!; sleep 8
w1=$(pgrep -f "worker --rank 1 .*$T/r8" | head -n 1)
[ -n "$w1" ] && kill -STOP "$w1"
t0=$(date +%s); wait $lp; rc=$?; dt=$(( $(date +%s) - t0 ))
row "8 launch, rank 1 SIGSTOPped" "exit 1 within ring timeout + grace" "exit $rc in ${dt}s: $(tail -n 1 "$T/launch.err" | cut -c1-100)"
run "8 launch --metrics_port 65535 --nproc 2" 2 20 "$BIN" launch --nproc 2 --metrics_port 65535 -- "${TINY[@]}"

# 9. SIGTERM while a worker waits for its peers.
RINGSAM_CLUSTER_SECRET=$s "$BIN" worker --rank 0 --world_size 2 --peers 127.0.0.1:$(free_port),127.0.0.1:$(free_port) \
    --transport tcp "${TINY[@]}" --output_dir "$T/r9" >/dev/null 2>"$T/w.err" &
wp=$!; sleep 2; t0=$(date +%s); kill -TERM $wp; wait $wp; rc=$?
row "9 SIGTERM while waiting for peers" "exit 143 at once" "exit $rc in $(( $(date +%s) - t0 ))s"

# 10-13. Numbers and sizes from users and files.
H=18446744073709551615
run "10 --ring_timeout_seconds u64::MAX" 2 10 "$BIN" train "${TINY[@]}" --ring_timeout_seconds $H
run "10 --connect_timeout u64::MAX" 2 10 "$BIN" worker --rank 0 --world_size 2 --peers a:1,b:2 --connect_timeout $H
run "10 bench --timeout u64::MAX" 2 10 "$BIN" bench allreduce --timeout $H
run "11 --prefetch 1000000000" 2 10 "$BIN" train "${TINY[@]}" --prefetch 1000000000
run "11 synthetic --image_size 4096" 2 20 "$BIN" train --dataset synthetic --image_size 4096 --model_name WideResnet10x1
run "11 WideResnet10x100000" 2 20 "$BIN" train --dataset digits --model_name WideResnet10x100000
run "11 --cutout_length u64::MAX" 2 10 "$BIN" train "${TINY[@]}" --cutout_length $H
run "11 bench --sizes 1024G" 2 10 "$BIN" bench allreduce --sizes 1024G
run "11 --config /dev/zero" 2 10 "$BIN" train --config /dev/zero
mkdir -p "$T/cifar"; for i in 1 2 4 5; do truncate -s 30730000 "$T/cifar/data_batch_$i.bin"; done
truncate -s 4G "$T/cifar/data_batch_3.bin"; truncate -s 30730000 "$T/cifar/test_batch.bin"
run "12 sparse 4 GiB data_batch_3.bin" 1 10 "$BIN" train --dataset cifar10 --data_dir "$T/cifar" --model_name WideResnet10x1 --max_steps 1
run "13 --ema_decay 2" 2 10 "$BIN" train "${TINY[@]}" --ema_decay 2
run "13 --warmup_epochs NaN" 2 10 "$BIN" train "${TINY[@]}" --warmup_epochs NaN
run "13 --quic_window 0" 2 10 "$BIN" bench allreduce --quic_window 0

echo "| probe | expected | observed |"
echo "| --- | --- | --- |"
printf '%s\n' "${rows[@]}"
