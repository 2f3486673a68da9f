#!/usr/bin/python3
"""ringsam's all-reduce against Gloo, side by side on this machine: alternating rounds of
benches/gloo_allreduce_baseline.py and `ringsam bench allreduce` (TCP and QUIC), then the median
busbw of each and its ratio to Gloo and to a single-thread memcpy. Alternating keeps a noisy
machine's drift out of the ratios.

    cargo build --release
    /usr/bin/python3 benches/allreduce_vs_gloo.py --nproc 4 --size 64M --rounds 3
"""
import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--size", default="64M")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--ringsam", default=os.path.join(HERE, "..", "target", "release", "ringsam"))
    ap.add_argument("--ring-threads", default="1", help="comma list: threads per rank's ring (ringsam --ring-threads)")
    ap.add_argument("--quic-stripes", default="1", help="comma list: QUIC connections per neighbour (ringsam --quic-stripes)")
    a = ap.parse_args()
    threads = [int(t) for t in a.ring_threads.split(",")]
    stripes = [int(s) for s in a.quic_stripes.split(",")]
    # (label, transport, threads, stripes): TCP once per thread count, QUIC per (threads, stripes).
    variants = [(t, t, n, 1) for n in threads for t in ("tcp",)] + [("quic", "quic", n, k) for n in threads for k in stripes]
    if len(threads) > 1 or len(stripes) > 1:
        variants = [(f"{t}/{n}t" + (f"{k}s" if t == "quic" else ""), t, n, k) for (_, t, n, k) in variants]
    busbw = {"gloo": [], **{v[0]: [] for v in variants}}
    memcpy = []
    for r in range(a.rounds):
        out = subprocess.run(
            [sys.executable, os.path.join(HERE, "gloo_allreduce_baseline.py"), "--nproc", str(a.nproc), "--sizes", a.size,
             "--iters", str(a.iters)], check=True, capture_output=True, text=True).stdout
        busbw["gloo"].append(float(out.strip().splitlines()[-1].split()[6]))
        for label, t, n, k in variants:
            out = subprocess.run(
                [a.ringsam, "bench", "allreduce", "--nproc", str(a.nproc), "--transport", t, "--sizes", a.size, "--iters",
                 str(a.iters), "--ring-threads", str(n), "--quic-stripes", str(k)], check=True, capture_output=True, text=True).stdout
            cols = out.strip().splitlines()[-1].split()  # transport nproc size count time algbw busbw /memcpy ok
            assert cols[0] == t and cols[-1] == "yes", out
            busbw[label].append(float(cols[6]))
            memcpy.append(float(cols[6]) / float(cols[7]))  # this run's memcpy GB/s
        print(f"round {r + 1}: " + "  ".join(f"{k} {v[-1]:.3f}" for k, v in busbw.items()), flush=True)
    med = {k: statistics.median(v) for k, v in busbw.items()}
    print(f"median busbw GB/s over {a.rounds} rounds, {a.nproc} processes, {a.size}:")
    for k, v in med.items():
        print(f"  {k:>10} {v:.3f}  {v / med['gloo']:.2f}x gloo  {v / statistics.median(memcpy):.3f}x memcpy")
    print(f"  single-thread memcpy {statistics.median(memcpy):.2f} GB/s")


if __name__ == "__main__":
    main()
