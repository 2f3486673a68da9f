#!/usr/bin/env bash
# Test hosts as network namespaces on this machine, for running the ring over real, rate-limited
# links (issue: the ring on real links). Needs root and iproute2 (`ip`, `tc`).
#
#   scripts/netns_ring.sh run --hosts N --rate RATE [--mtu BYTES] [--gro on|off] -- COMMAND [ARGS...]
#       Builds N hosts, runs COMMAND in the root namespace, and removes everything when COMMAND
#       ends, fails, or the script is interrupted. COMMAND sees:
#         RINGSAM_NETNS_HOSTS  the hosts' namespace names, space-separated, in rank order
#         RINGSAM_NETNS_ADDRS  their addresses, likewise
#         RINGSAM_NETNS_RATE   the egress rate (tc syntax, e.g. 1gbit)
#       and runs a process on host i with `ip netns exec <name i> ...`.
#   scripts/netns_ring.sh down --prefix PREFIX
#       Removes what a killed run with that prefix left (PREFIXsw, PREFIXh0, PREFIXh1, ...).
# Rates are tc's: bits per second (100mbit, 1gbit).
#
# Topology: host i is namespace ${prefix}h$i with one interface eth0 at 10.203.0.(i+1)/24, a veth
# whose other end sits in the switch namespace ${prefix}sw, enslaved to a bridge there. The
# subnet exists only inside these namespaces: the root namespace gets no address and no route.
# Each host's egress is shaped by a token-bucket filter (`tc qdisc ... tbf`) at RATE: a ring
# rank sends only to the next rank, so the egress is the link that the ring's bandwidth sees.
# (netem is not available on these machines; tbf is in every kernel.) Receive offload (GRO) is on
# on each host's interface by default, as a physical NIC's driver has it (a veth has it off
# unless asked): without it every 1500-byte datagram is its own trip up the stack, which is not
# what the ring meets on real hosts. `--gro off` measures without it. GRO needs ethtool.
set -euo pipefail

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

die() { echo "netns_ring.sh: $*" >&2; exit 1; }

# Namespaces this run created (only these are deleted on exit).
created=()

teardown_created() {
    for ns in "${created[@]}"; do
        ip netns del "$ns" 2>/dev/null || true # deleting a namespace deletes its veth ends
    done
}

# `down`: exactly the names a run with this prefix makes (PREFIXsw, PREFIXh0, PREFIXh1, ...).
teardown_prefix() {
    local prefix=$1
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${prefix}(sw|h[0-9]+)$" || true); do
        ip netns del "$ns" 2>/dev/null || true
    done
}

add_ns() {
    ip netns add "$1" || die "cannot create namespace $1 (does it exist already? scripts/netns_ring.sh down --prefix ...)"
    created+=("$1")
}

# tbf needs a bucket of at least one timer tick's worth of bytes at the rate (and at least one
# packet); 4 ms of traffic, never under 64 KiB, keeps the shaper accurate from 10 Mbit/s up.
burst_for() {
    local rate=$1 bits
    bits=$(echo "$rate" | awk '{
        r = tolower($1); m = 1;
        if (r ~ /gbit$/) { m = 1e9; sub(/gbit$/, "", r) } else if (r ~ /mbit$/) { m = 1e6; sub(/mbit$/, "", r) }
        else if (r ~ /kbit$/) { m = 1e3; sub(/kbit$/, "", r) } else if (r ~ /bit$/) { sub(/bit$/, "", r) }
        printf "%d", r * m }')
    [ "$bits" -gt 0 ] 2>/dev/null || die "--rate $rate: expected a tc rate such as 100mbit or 1gbit"
    local b=$((bits / 8 / 250))
    [ "$b" -lt 65536 ] && b=65536
    echo "$b"
}

cmd=${1:-}
[ -n "$cmd" ] || usage
shift
hosts=0 rate="" mtu=1500 gro=on prefix="rs$$"
while [ $# -gt 0 ]; do
    case "$1" in
        --hosts) hosts=$2; shift 2 ;;
        --rate) rate=$2; shift 2 ;;
        --mtu) mtu=$2; shift 2 ;;
        --gro) gro=$2; shift 2 ;;
        --prefix) prefix=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) usage ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

[[ "$prefix" =~ ^[A-Za-z][A-Za-z0-9]{0,11}$ ]] || die "--prefix: 1 to 12 letters and digits, starting with a letter"
case "$cmd" in
    down) teardown_prefix "$prefix"; exit 0 ;;
    run) ;;
    *) usage ;;
esac

[ "$(id -u)" = 0 ] || die "needs root (network namespaces and tc)"
command -v ip >/dev/null && command -v tc >/dev/null || die "needs iproute2 (ip, tc)"
[ "$hosts" -ge 2 ] 2>/dev/null && [ "$hosts" -le 200 ] || die "--hosts N: 2 to 200"
[ -n "$rate" ] || die "--rate RATE is required (e.g. 1gbit)"
case "$gro" in
    on) command -v ethtool >/dev/null || die "--gro on needs ethtool (apt-get install ethtool), or pass --gro off" ;;
    off) ;;
    *) die "--gro on|off" ;;
esac
[ $# -gt 0 ] || die "no COMMAND after --"
burst=$(burst_for "$rate")

trap teardown_created EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sw="${prefix}sw"
add_ns "$sw"
ip -n "$sw" link set lo up
ip -n "$sw" link add br0 type bridge
ip -n "$sw" link set br0 mtu "$mtu" up
names="" addrs=""
for i in $(seq 0 $((hosts - 1))); do
    ns="${prefix}h$i"
    addr="10.203.0.$((i + 1))"
    add_ns "$ns"
    ip -n "$ns" link set lo up
    ip link add eth0 netns "$ns" mtu "$mtu" type veth peer name "p$i" netns "$sw" mtu "$mtu"
    ip -n "$sw" link set "p$i" master br0 up
    ip -n "$ns" addr add "$addr/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip netns exec "$ns" tc qdisc add dev eth0 root tbf rate "$rate" burst "$burst" latency 20ms
    [ "$gro" = on ] && ip netns exec "$ns" ethtool -K eth0 gro on >/dev/null
    names="$names $ns" addrs="$addrs $addr"
done
# No readiness wait: the bridge has STP off, so its ports forward at once, and ringsam's ring
# formation retries its connects until its timeout anyway.
# In the background and waited for: bash runs a trap only between commands, so a foreground
# COMMAND would hold off SIGTERM's cleanup until it ended by itself.
RINGSAM_NETNS_HOSTS="${names# }" RINGSAM_NETNS_ADDRS="${addrs# }" RINGSAM_NETNS_RATE="$rate" "$@" &
child=$!
# A background job starts with SIGINT ignored, so the child always gets TERM; its own traps
# stop what it started, and it is waited for before the namespaces go.
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 130' INT
trap 'kill -TERM $child 2>/dev/null; wait $child; exit 143' TERM
wait "$child"
