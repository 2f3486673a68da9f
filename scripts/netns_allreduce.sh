#!/usr/bin/env bash
# `ringsam bench allreduce` across the test hosts scripts/netns_ring.sh builds, one process per
# host, peers by address, with the single-stream TCP line rate of the same links measured first.
# Run it through netns_ring.sh (it reads RINGSAM_NETNS_HOSTS / RINGSAM_NETNS_ADDRS):
#
#   scripts/netns_ring.sh run --hosts 4 --rate 1gbit -- \
#       scripts/netns_allreduce.sh [--bin target/release/ringsam] [--transports tcp,quic] \
#       [--sizes 64M] [--iters 3] [--link-seconds 3] [-- EXTRA bench allreduce FLAGS...]
#
# Prints JSON lines: {"link": ...} (host 1 → host 0, one TCP stream), then one row per transport
# and size as `bench allreduce --json` prints them, each with "line_rate_gbs" and
# "fraction_of_line_rate" (busbw / line rate) added.
#
# The hosts share this machine's cores, so each rank gets --ring-threads cores/hosts (at least
# 1) unless the extra flags say otherwise: a rank started by hand assumes a host of its own, and
# here its extra threads would only contend (measured, 4 hosts on 2 cores at 1 Gbit/s, QUIC:
# 0.84 of the line with 1 thread per rank, 0.76 with 2).
set -euo pipefail

bin=target/release/ringsam transports=tcp,quic sizes=64M iters=3 link_seconds=3
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) bin=$2; shift 2 ;;
        --transports) transports=$2; shift 2 ;;
        --sizes) sizes=$2; shift 2 ;;
        --iters) iters=$2; shift 2 ;;
        --link-seconds) link_seconds=$2; shift 2 ;;
        --) shift; break ;;
        *) echo "netns_allreduce.sh: unknown option $1" >&2; exit 2 ;;
    esac
done
extra=("$@")
: "${RINGSAM_NETNS_HOSTS:?run me through scripts/netns_ring.sh run}"
read -r -a hosts <<<"$RINGSAM_NETNS_HOSTS"
read -r -a addrs <<<"$RINGSAM_NETNS_ADDRS"
n=${#hosts[@]}
if [[ " ${extra[*]} " != *" --ring-threads"* ]]; then
    per=$(( $(nproc) / n ))
    per=$(( per < 1 ? 1 : per > 4 ? 4 : per ))   # as ringsam's own rule: 1 to 4
    extra+=(--ring-threads "$per")
fi
bin=$(realpath "$bin")
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

# The line rate: one TCP stream from host 1 to host 0 through the shaped egress of host 1.
ip netns exec "${hosts[0]}" "$bin" bench link --listen "${addrs[0]}:7999" --json >"$work/link.json" &
pids+=($!)
ip netns exec "${hosts[1]}" "$bin" bench link --connect "${addrs[0]}:7999" --seconds "$link_seconds" --json >/dev/null
wait "${pids[-1]}"
line=$(sed -n 's/.*"gbyte_s":\([0-9.e+-]*\).*/\1/p' "$work/link.json")
[ -n "$line" ] || { echo "netns_allreduce.sh: no line rate in $(cat "$work/link.json")" >&2; exit 1; }
echo "{\"link\":$(cat "$work/link.json")}"

"$bin" certs --out "$work/certs" --nodes "$n" >/dev/null
export RINGSAM_CLUSTER_SECRET
RINGSAM_CLUSTER_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
peers=$(for i in $(seq 0 $((n - 1))); do printf '%s:7000,' "${addrs[$i]}"; done)
peers=${peers%,}
IFS=',' read -r -a tlist <<<"$transports"
for t in "${tlist[@]}"; do
    pids=()
    for i in $(seq 0 $((n - 1))); do
        args=(bench allreduce --transport "$t" --rank "$i" --peers "$peers" --sizes "$sizes" --iters "$iters" --json "${extra[@]}")
        if [ "$t" = quic ]; then
            args+=(--ca "$work/certs/ca.pem" --cert "$work/certs/node-$i.pem" --key "$work/certs/node-$i.key")
        fi
        out=/dev/null
        [ "$i" = 0 ] && out="$work/$t.json"
        RINGSAM_THREADS=1 ip netns exec "${hosts[$i]}" "$bin" "${args[@]}" >"$out" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p"; done
    while read -r row; do
        busbw=$(echo "$row" | sed -n 's/.*"busbw_gbs":\([0-9.e+-]*\).*/\1/p')
        frac=$(awk -v b="$busbw" -v l="$line" 'BEGIN { printf "%.4f", (l > 0 ? b / l : 0) }')
        echo "${row%\}},\"line_rate_gbs\":$line,\"fraction_of_line_rate\":$frac}"
    done <"$work/$t.json"
done
