#!/usr/bin/env bash
# Issue 19's chaos trial "a network-namespace link cut of one host": three elastic workers, each
# on a host of its own (a network namespace), lose one host's link mid-run and get it back.
# Needs root and iproute2. Builds nothing: the binary is $RINGSAM_BIN (default
# target/release/ringsam).
#
#   scripts/chaos_netns.sh [TRIALS]      (default 2)
#
# Trials alternate between two jobs (as tests/elastic.rs runs them: digits, batch 48 = three
# micro-batches of 16, heartbeat 0.2 s, settle 0.5 s, one output directory shared by all):
#   even: WRN-10-1, --min_replicas 3. The two hosts still linked are a majority but fewer than
#         min, so they wait; the cut one is a minority and must not train alone either. Nothing
#         trains until the link is back, the world never changes: the final parameters must be
#         BITWISE equal to an uninterrupted run's.
#   odd:  SmallCnn, --min_replicas 2. The majority goes on as two, the cut host waits, and on
#         healing it is taken back (3 -> 2 -> 3). Final parameters within 1e-5 (relative, per
#         tensor) of an uninterrupted run: only the order of float sums changed. (SmallCnn, not
#         WRN-10-1: the tests' doc comment says why.)
# Each trial must also show: every worker exits 0; the cut host logs no training step while cut;
# the majority waits (min 3) or trains (min 2) while it is cut; the cut host is in a generation
# formed after the heal; the majority goes on (min 2) and the cut host is back within 3 s, every
# generation after the cut ready (rings formed, state taken) within 2 s; and no split brain:
# each generation number names one slot set in every log, at least min slots and a strict
# majority of the generation before it.
# Prints one line per trial and a summary; exits 1 if any trial failed (its logs are kept), 2 if
# it could not start.
#
# Environment: RINGSAM_BIN; CHAOS_NETNS_CUT (seconds the link stays down in the min-3 trials,
# default 3; the min-2 trials heal once the majority has gone on without the cut host);
# CHAOS_NETNS_KEEP=1 keeps every trial's logs.
#
# Topology (as scripts/netns_ring.sh): host i is namespace ${prefix}h$i, eth0 at 10.77.0.(i+1)/24,
# a veth to port p$i of a bridge in a switch namespace ${prefix}sw; the root namespace gets
# nothing. The cut is `ip link set p$i down` on the SWITCH side: a pulled cable. The host keeps
# its address and routes and its packets vanish (TCP retransmits, UDP datagrams are dropped),
# which is what a partition looks like to the worker. Downing eth0 itself would remove the
# host's route and make every send fail at once: an easier failure than silence.
set -euo pipefail
cd "$(dirname "$0")/.."

trials=${1:-2}
cut_seconds=${CHAOS_NETNS_CUT:-3}
bin=${RINGSAM_BIN:-target/release/ringsam}
die() { echo "chaos_netns.sh: $*" >&2; exit 2; }
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
command -v ip >/dev/null && command -v tc >/dev/null || die "needs iproute2 (ip, tc)"
command -v python3 >/dev/null || die "needs python3 (compares the checkpoints)"
[ -x "$bin" ] || die "no binary at $bin (set RINGSAM_BIN; this script builds nothing)"
[[ "$trials" =~ ^[0-9]+$ ]] && [ "$trials" -ge 1 ] || die "TRIALS: a positive integer"
bin=$(realpath "$bin")

N=3
prefix="rcut$$"
sw="${prefix}sw"
work=$(mktemp -d /tmp/chaos_netns.XXXXXX)
created=() pids=()
failed=0

# Everything this run made goes on exit, however it exits: workers first (by pid: they are ours),
# then the namespaces (deleting one deletes its veth ends), then the logs unless a trial failed.
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    for ns in "${created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "$failed" = 0 ] && [ -z "${CHAOS_NETNS_KEEP:-}" ]; then rm -rf "$work"; else echo "logs kept in $work" >&2; fi
}
trap cleanup EXIT
trap 'failed=1; exit 130' INT
trap 'failed=1; exit 143' TERM

add_ns() { ip netns add "$1"; created+=("$1"); ip -n "$1" link set lo up; }
add_ns "$sw"
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 up
peers=""
for i in $(seq 0 $((N - 1))); do
    add_ns "${prefix}h$i"
    ip link add eth0 netns "${prefix}h$i" type veth peer name "p$i" netns "$sw"
    ip -n "$sw" link set "p$i" master br0 up
    ip -n "${prefix}h$i" addr add "10.77.0.$((i + 1))/24" dev eth0
    ip -n "${prefix}h$i" link set eth0 up
    peers+="10.77.0.$((i + 1)):29500,"   # one IP per host, so every host can use the same ports
done
peers=${peers%,}

RINGSAM_CLUSTER_SECRET=$("$bin" certs --secret)
export RINGSAM_CLUSTER_SECRET RINGSAM_THREADS=1

# The checkpoint comparison: safetensors is an 8-byte little-endian header length, a JSON header
# of name -> {dtype, shape, data_offsets}, then the data. BITWISE compares the bytes; otherwise
# each F32 tensor must be within 1e-5 of the reference relative to the reference's largest |value|.
cat >"$work/compare.py" <<'EOF'
import json, struct, sys
def load(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    head = json.loads(b[8:8 + n]); head.pop('__metadata__', None)
    return {k: (v['dtype'], b[8 + n + v['data_offsets'][0]:8 + n + v['data_offsets'][1]]) for k, v in head.items()}
got, ref, mode = load(sys.argv[1]), load(sys.argv[2]), sys.argv[3]
if sorted(got) != sorted(ref): sys.exit('tensor names differ')
worst, bad = 0.0, []
for k in sorted(ref):
    (dg, a), (dr, b) = got[k], ref[k]
    if a == b: continue
    if mode == 'bitwise' or dg != 'F32' or dr != 'F32' or len(a) != len(b): bad.append(k); continue
    x, y = struct.unpack('<%df' % (len(a) // 4), a), struct.unpack('<%df' % (len(b) // 4), b)
    rel = max(abs(p - q) for p, q in zip(x, y)) / max(max(abs(q) for q in y), 1e-12)
    worst = max(worst, rel)
    if not rel <= 1e-5: bad.append('%s (%.2e)' % (k, rel))
print('bitwise equal' if worst == 0 and not bad else 'max relative difference %.2e' % worst)
if bad: sys.exit('differ: ' + ', '.join(bad[:5]))
EOF

# Starts slot $2 of the job in directory $1 (min $3, model $4) on its host; stderr to its log.
spawn() {
    local out=$1 slot=$2 min=$3 model=$4
    ip netns exec "${prefix}h$slot" "$bin" --threads 1 worker --rank "$slot" --world_size $N --peers "$peers" \
        --transport tcp --min_replicas "$min" --heartbeat_seconds 0.2 --rendezvous_settle_seconds 0.5 \
        --connect_timeout 30 --ring_timeout_seconds 20 \
        --dataset digits --batch_size 48 --image_level_augmentations none --sam_rho 0.05 --save_progress_seconds 1 \
        --model_name "$model" --max_steps "$(steps_of "$model")" --log_every_steps 1 --output_dir "$out" \
        >/dev/null 2>>"$out/slot-$slot.log" &
    pids+=($!)
}

# Run lengths. WRN-10-1 trains nothing while cut: 80 steps. The majority of a SmallCnn job
# trains through the cut and the ~1 s rejoin, so 200 steps on shaped links (see `trial`), or
# the run ends before the cut host is back (it then leaves, reading the run's FINISHED record,
# but the trial wants the rejoin). Measured on
# this job, a resize at any step from 4 to 12 ends 2e-7 to 5e-7 from the uninterrupted run after
# 200 steps. Not larger batches to slow the steps: SmallCnn at batch 480 or 960 crosses 1e-5 after
# 40 steps for some resize steps (a kill -9 does the same), the sensitivity tests/elastic.rs
# describes for four_to_three_to_four.
steps_of() { if [ "$1" = SmallCnn ]; then echo 200; else echo 80; fi; }

# Steps logged so far, all slots together (only a generation's rank 0 logs them).
steps_logged() { cat "$1"/slot-*.log 2>/dev/null | grep -c '^ringsam: slot [0-9]*: step [0-9]*/' || true; }
steps_in() { grep -c '^ringsam: slot [0-9]*: step [0-9]*/' "$1" 2>/dev/null || true; }
# "G SLOTS" for every generation line of every log ("generation G: N replicas (slots a,b,c)").
generations() { cat "$1"/slot-*.log | sed -n 's/.*: generation \([0-9]*\): [0-9]* replicas (slots \([0-9,]*\)).*/\1 \2/p'; }

# Waits for the job's workers (the last N pids), 120 s in all; returns non-zero unless every one
# exits 0.
finish() {
    local out=$1 ok=0 s=0 p rc t0=$SECONDS
    for p in "${pids[@]: -$N}"; do
        while kill -0 "$p" 2>/dev/null && [ $((SECONDS - t0)) -lt 120 ]; do sleep 0.2; done
        kill -KILL "$p" 2>/dev/null && { echo "slot $s did not finish in 120 s (killed)" >>"$out/why"; ok=1; }
        rc=0; wait "$p" || rc=$?
        [ "$rc" = 0 ] || { echo "slot $s exited $rc" >>"$out/why"; ok=1; }
        s=$((s + 1))
    done
    pids=()
    return $ok
}

model_of() { find "$1" -path "*/checkpoints/checkpoint_$(steps_of "$2")/model.safetensors" | head -1; }

# An uninterrupted run of $1 on the same hosts, once per model.
declare -A reference
reference_for() {
    local model=$1 out="$work/ref-$1"
    [ -n "${reference[$model]:-}" ] && return
    mkdir -p "$out"
    for s in $(seq 0 $((N - 1))); do spawn "$out" "$s" 3 "$model"; done
    finish "$out" || { failed=1; die "the uninterrupted $model run failed: $(cat "$out/why"); logs in $out"; }
    reference[$model]=$(model_of "$out" "$model")
    [ -n "${reference[$model]}" ] || { failed=1; die "the uninterrupted $model run left no final checkpoint"; }
}

# One trial: $1 is its number. Appends "why" lines to $out/why and returns 1 on any failure.
trial() {
    local t=$1 min model mode victim at out why=""
    if [ $((t % 2)) = 0 ]; then min=3 model=WideResnet10x1 mode=bitwise; else min=2 model=SmallCnn mode=tolerance; fi
    victim=$(( (t * 2 + 1) % N ))     # 1, 0, 2, 1, ...: slot 0, the usual leader, is cut too
    at=$(( 4 + (t * 7) % 9 ))         # the step to cut at
    reference_for "$model"
    # SmallCnn's steps take 4 ms: its majority would finish the run during the ~1 s rejoin. Its
    # links are shaped to 8 Mbit/s (tc tbf; this kernel has no netem delay), which makes a step
    # ~40 ms and changes nothing in the math. The references ran unshaped.
    for i in $(seq 0 $((N - 1))); do
        ip netns exec "${prefix}h$i" tc qdisc del dev eth0 root 2>/dev/null || true
        [ "$min" = 3 ] || ip netns exec "${prefix}h$i" tc qdisc add dev eth0 root tbf rate 8mbit burst 16kb latency 200ms
    done
    out="$work/trial-$t"; mkdir -p "$out"
    for s in $(seq 0 $((N - 1))); do spawn "$out" "$s" "$min" "$model"; done
    local t0=$SECONDS
    until cat "$out"/slot-*.log 2>/dev/null | grep -q ": step $at/"; do
        [ $((SECONDS - t0)) -lt 120 ] || { echo "never reached step $at" >>"$out/why"; break; }
        sleep 0.05
    done
    local gens_before cut_ns heal_ns rejoin=""
    gens_before=$(generations "$out" | awk '{print $1}' | sort -n | tail -1)
    cut_ns=$(date +%s%N)
    ip -n "$sw" link set "p$victim" down
    # Three heartbeats (0.6 s) to notice, and a step in flight to fail: from then on the cut host
    # must log no step.
    sleep 1
    local v0 all0 v1 all1 cut_for
    v0=$(steps_in "$out/slot-$victim.log"); all0=$(steps_logged "$out")
    if [ "$min" = 3 ]; then
        sleep "$(awk -v c="$cut_seconds" 'BEGIN {print (c > 1 ? c - 1 : 0)}')"
    else
        # Healed as soon as the majority has formed without the cut host and trained 5 steps, so
        # it does not reach the end first (else the cut host would wait for a job that is over).
        local formed="" went_on=""
        t0=$SECONDS
        while [ $((SECONDS - t0)) -lt 30 ]; do
            if [ -z "$formed" ] && generations "$out" | awk -v b="${gens_before:-0}" -v v="$victim" \
                '$1 > b && index("," $2 ",", "," v ",") == 0 {f=1} END {exit !f}'; then
                formed=$(steps_logged "$out")
                went_on=$(( ($(date +%s%N) - cut_ns) / 1000000 ))
            fi
            [ -n "$formed" ] && [ "$(steps_logged "$out")" -ge $((formed + 5)) ] && break
            sleep 0.02
        done
        [ -n "$formed" ] || echo "the majority (min 2) did not form without slot $victim in 30 s" >>"$out/why"
        # Three heartbeats, the settle time and the rendezvous: about 1.2 s.
        [ -z "$formed" ] || [ "$went_on" -le 3000 ] ||
            echo "the majority took $went_on ms to go on without slot $victim" >>"$out/why"
    fi
    v1=$(steps_in "$out/slot-$victim.log"); all1=$(steps_logged "$out")
    ip -n "$sw" link set "p$victim" up
    heal_ns=$(date +%s%N)
    cut_for=$(awk -v a="$cut_ns" -v b="$heal_ns" 'BEGIN {printf "%.1f", (b - a) / 1e9}')
    [ "$v1" = "$v0" ] || echo "slot $victim (cut off) logged $((v1 - v0)) steps while cut" >>"$out/why"
    if [ "$min" = 3 ]; then
        [ "$all1" = "$all0" ] || echo "$((all1 - all0)) steps trained while fewer than min=3 were linked" >>"$out/why"
    else
        [ "$all1" -gt "$all0" ] || echo "the majority (min 2) did not train while slot $victim was cut" >>"$out/why"
    fi
    # The cut host is back once it logs a generation above every one formed before the heal.
    local top_at_heal ended=""
    top_at_heal=$(generations "$out" | awk '{print $1}' | sort -n | tail -1)
    t0=$SECONDS
    while [ $((SECONDS - t0)) -lt 60 ]; do
        if sed -n 's/.*: generation \([0-9]*\): .*/\1/p' "$out/slot-$victim.log" | awk -v g="$top_at_heal" '$1 > g {f=1} END {exit !f}'; then
            rejoin=$(( ($(date +%s%N) - heal_ns) / 1000000 )); break
        fi
        kill -0 "${pids[@]: -$N}" 2>/dev/null || { ended=1; break; }
        sleep 0.05
    done
    # A run that ends before the cut host is back: the cut host must leave (exit 0, checked by
    # `finish`), but the rejoin this trial is for did not happen.
    [ -z "$rejoin" ] || [ "$rejoin" -le 3000 ] || echo "slot $victim took $rejoin ms to be taken back" >>"$out/why"
    [ -n "$rejoin" ] || echo "slot $victim was not taken back${ended:+: the others ended the run first}${ended:- within 60 s of the heal}" >>"$out/why"
    finish "$out" || true
    # No split brain: one slot set per generation number, each at least min and a strict majority
    # of the generation before.
    generations "$out" | sort -n -k1,1 -u | awk -v min="$min" '
        { delete s; n = split($2, s, ","); if (n < min) print "generation " $1 " formed with " n " < min " min }
        prev != "" { k = 0; for (i in s) if (index("," prev ",", "," s[i] ",")) k++
                     if (2 * k <= pn) print "generation " $1 " (slots " $2 ") holds no majority of slots " prev }
        { prev = $2; pn = n }' >>"$out/why"
    generations "$out" | sort -u | awk '{ if (($1 in seen) && seen[$1] != $2) print "split brain: generation " $1 " formed as slots " seen[$1] " and " $2; seen[$1] = $2 }' >>"$out/why"
    local cmp got
    got=$(model_of "$out" "$model")
    if [ -z "$got" ]; then echo "no final checkpoint" >>"$out/why"; cmp="-"
    elif ! cmp=$(python3 "$work/compare.py" "$got" "${reference[$model]}" "$mode" 2>&1); then echo "$cmp" >>"$out/why"; fi
    local gens ready retries
    # Formations that failed and were retried (rings not formed, or the state transfer lost).
    retries=$(cat "$out"/slot-*.log | grep -c 'forming the rings failed\|recovery failed' || true)
    gens=$(generations "$out" | sort -n -k1,1 -u | awk -v b="${gens_before:-0}" '$1 > b {printf "%s%s:%s", sep, $1, $2; sep=" "}')
    # The slowest "ready in T s" (rings formed and state taken) of the generations after the cut.
    ready=$(cat "$out"/slot-*.log | sed -n 's/.*: generation \([0-9]*\): .*; ready in \([0-9.]*\) s.*/\1 \2/p' |
        awk -v b="${gens_before:-0}" '$1 > b && $2 > m {m = $2} END {print m + 0}')
    # Forming rings and taking state takes ~0.1 s here. Much more means a member joined the rings
    # late: its ring driver blocked writing to the cut host (seen before the heartbeats' abort
    # could interrupt a write: WRN-16-2, min 2, `ready in 19.1 s` = --ring_timeout_seconds).
    awk -v r="$ready" 'BEGIN {exit !(r > 2)}' && echo "a generation took ${ready} s to get ready (a member late to the rings)" >>"$out/why"
    why=$(paste -sd';' "$out/why" 2>/dev/null || true)
    echo "netns trial $t: $model min $min, slot $victim cut at step $at for ${cut_for}s: $cmp;" \
        "generations after the cut [$gens], ${retries} retried, slowest ready in ${ready} s;" \
        "${went_on:+majority went on after $went_on ms; }back ${rejoin:-never} ms after the heal;" \
        "${why:+FAILED: }${why:-ok}"
    [ -z "$why" ] && echo "$rejoin" >>"$work/rejoin_ms"
    [ -z "$why" ]
}

passed=0
for t in $(seq 0 $((trials - 1))); do
    if trial "$t"; then passed=$((passed + 1)); else failed=1; fi
done
med=$(sort -n "$work/rejoin_ms" 2>/dev/null | awk '{a[NR]=$1} END {if (NR) printf "%d ms", a[int((NR + 1) / 2)]; else print "-"}')
mx=$(sort -n "$work/rejoin_ms" 2>/dev/null | tail -1)
echo "netns link cut: $passed of $trials trials passed; heal to rejoin median $med, max ${mx:--} ms"
[ "$failed" = 0 ]
