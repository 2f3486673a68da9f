#!/usr/bin/python3
"""ringsam's all-reduce against Gloo, side by side on this machine: alternating rounds of Gloo and
`ringsam bench allreduce` (TCP and QUIC), then for each the median busbw, its ratio to the best
Gloo algorithm, and the median CPU time per byte (user + sys of every rank over the timed
operations, divided by the bytes each rank all-reduces). Alternating keeps a noisy machine's
drift out of the ratios; CPU per byte is the steadier figure where ranks share few cores.

    cargo build --release
    /usr/bin/python3 benches/allreduce_vs_gloo.py --nproc 4 --size 64M --rounds 5

Gloo runs as benches/gloo_allreduce.cc (every algorithm Gloo ships, over its TCP transport),
compiled here against Debian's libgloo-dev, which the script installs with apt-get when it is
missing; `--gloo torch` runs torch.distributed's Gloo backend instead
(benches/gloo_allreduce_baseline.py, Debian's python3-torch).

More ringsam variants in the same rounds: `--variant LABEL:TRANSPORT:FLAGS`, e.g.
`--variant "quic-4s:quic:--quic_driver quinn --quic_stripes 4"` (repeatable; stripes are quinn's driver's); `--base-ringsam PATH` adds TCP and QUIC
rows of another build (the one before a change), so a change is judged within one run.
"""
import argparse
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def build_gloo_cpp():
    """Compiles benches/gloo_allreduce.cc into target/ when the binary is missing or stale."""
    src = os.path.join(HERE, "gloo_allreduce.cc")
    exe = os.path.join(ROOT, "target", "gloo_allreduce")
    if os.path.exists(exe) and os.path.getmtime(exe) >= os.path.getmtime(src):
        return exe
    if not os.path.exists("/usr/include/gloo/allreduce_ring_chunked.h") or not shutil.which("g++"):
        print("installing libgloo-dev and g++ (apt-get)", file=sys.stderr, flush=True)
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-q", "libgloo-dev", "g++"], check=True, env=env, stdout=subprocess.DEVNULL)
    os.makedirs(os.path.dirname(exe), exist_ok=True)
    subprocess.run(["g++", "-O2", "-std=c++17", src, "-o", exe, "-lgloo", "-lpthread"], check=True)
    return exe


def gloo_rows(a, exe):
    """{label: row} for each Gloo algorithm, one run."""
    if a.gloo == "torch":
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "gloo_allreduce_baseline.py"), "--nproc", str(a.nproc), "--sizes", a.size,
             "--iters", str(a.iters)], check=True, capture_output=True, text=True).stdout
        cols = out.strip().splitlines()[-1].split()
        return {"gloo-torch": {"busbw_gbs": float(cols[6]), "cpu_s": float("nan"), "bytes": int(cols[2]), "ok": cols[-1] == "yes"}}
    out = subprocess.run([exe, "--nproc", str(a.nproc), "--bytes", str(parse_size(a.size)), "--iters", str(a.iters)], check=True,
                         capture_output=True, text=True).stdout
    return {r["transport"]: r for r in map(json.loads, out.strip().splitlines())}


def ringsam_row(a, transport, flags, exe=None):
    out = subprocess.run(
        [exe or a.ringsam, "bench", "allreduce", "--nproc", str(a.nproc), "--transport", transport, "--sizes", a.size, "--iters",
         str(a.iters), "--json"] + flags, check=True, capture_output=True, text=True).stdout
    row = json.loads(out.strip().splitlines()[-1])
    assert row["transport"] == transport and row["ok"] and row["cpu_ranks"] == a.nproc, out
    return row


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1].upper(), 1)
    return int(s[:-1] if mult > 1 else s) * mult


def ns_per_byte(row):
    return row["cpu_s"] * 1e9 / row["bytes"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--size", default="64M")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--gloo", choices=["cpp", "torch"], default="cpp")
    ap.add_argument("--ringsam", default=os.path.join(ROOT, "target", "release", "ringsam"))
    ap.add_argument("--ring-threads", default="1", help="ringsam's --ring_threads for the tcp and quic rows")
    ap.add_argument("--variant", action="append", default=[], help="LABEL:TRANSPORT:FLAGS, another ringsam row")
    ap.add_argument("--base-ringsam", help="another ringsam build: its tcp and quic rows too (tcp@base, quic@base)")
    a = ap.parse_args()
    exe = build_gloo_cpp() if a.gloo == "cpp" else None
    base = ["--ring_threads", a.ring_threads]
    variants = [("tcp", "tcp", base, None), ("quic", "quic", base, None)]
    if a.base_ringsam:
        variants += [("tcp@base", "tcp", base, a.base_ringsam), ("quic@base", "quic", base, a.base_ringsam)]
    for v in a.variant:
        label, transport, flags = v.split(":", 2)
        variants.append((label, transport, base + shlex.split(flags), None))
    rows = {}
    for r in range(a.rounds):
        # Alternate which side goes first, so neither always runs on a machine just warmed up.
        order = ["gloo"] + [v[0] for v in variants]
        if r % 2:
            order.reverse()
        for name in order:
            if name == "gloo":
                for label, row in gloo_rows(a, exe).items():
                    assert row["ok"], f"{label}: wrong results"
                    rows.setdefault(label, []).append(row)
            else:
                _, transport, flags, build = next(v for v in variants if v[0] == name)
                rows.setdefault(name, []).append(ringsam_row(a, transport, flags, build))
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]['busbw_gbs']:.3f}" for k, v in rows.items()), flush=True)
    busbw = {k: statistics.median(x["busbw_gbs"] for x in v) for k, v in rows.items()}
    cpu = {k: statistics.median(ns_per_byte(x) for x in v) for k, v in rows.items()}
    gloo = [k for k in rows if k.startswith("gloo")]
    best = max(gloo, key=busbw.get)
    print(f"median over {a.rounds} rounds, {a.nproc} processes, {a.size}; best Gloo algorithm: {best}")
    print(f"{'':>24} {'busbw GB/s':>10} {'/best gloo':>10} {'cpu ns/B':>9} {'/tcp cpu':>9}")
    for k in rows:
        print(f"{k:>24} {busbw[k]:>10.3f} {busbw[k] / busbw[best]:>9.2f}x {cpu[k]:>9.3f} {cpu[k] / cpu['tcp']:>8.2f}x")


if __name__ == "__main__":
    main()
