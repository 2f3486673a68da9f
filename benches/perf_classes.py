#!/usr/bin/python3
"""Milliseconds of CPU by class in `perf record -F 999 -a` profiles of the ring, for the tables in
docs/BENCHMARKS.md ("What the AEAD costs"): each sample is one core's millisecond, classed by its
symbol (kernel, page faults, memcpy, AES-GCM, quinn, the ring's sums, the driver, allocation, the
benchmark's own refill and check, idle).

    perf record -F 999 -a -o tcp.data -- target/release/ringsam bench allreduce --nproc 4 \\
        --transport tcp --sizes 64M --iters 20 --cpu
    perf record -F 999 -a -o quic.data -- ... --transport quic ...
    /usr/bin/python3 benches/perf_classes.py tcp.data quic.data

Prints one column per profile; the total leaves out the benchmark's own work and idle time.
"""
import collections
import os
import re
import subprocess
import sys

CLASSES = ["kernel", "kernel: page faults, memory", "memcpy", "AES-GCM", "quinn-proto and quinn-udp",
           "the ring's sums and copies", "ringsam's driver, tokio", "allocation, other", "benchmark", "idle"]


def class_of(kind, sym):
    if "safe_halt" in sym or "idle" in sym:
        return "idle"
    if kind == "k":
        return "kernel: page faults, memory" if re.search(r"page|fault|mm_", sym) else "kernel"
    if "memmove" in sym or "memcpy" in sym:
        return "memcpy"
    if "memcmp" in sym or "ringsam_bench" in sym:
        return "benchmark"
    if re.search(r"aes|gcm|ghash", sym, re.I):
        return "AES-GCM"
    if "quinn" in sym:
        return "quinn-proto and quinn-udp"
    if "ringsam_ring" in sym:
        return "the ring's sums and copies"
    if "ringsam_collective" in sym or "tokio" in sym:
        return "ringsam's driver, tokio"
    return "allocation, other"


def profile(path):
    """{class: samples} of one perf.data file."""
    out = subprocess.run(["perf", "report", "-i", path, "--no-children", "--sort", "sym", "--stdio", "-F", "sample,sym"],
                         capture_output=True, text=True, check=True).stdout
    counts = collections.Counter()
    for line in out.splitlines():
        m = re.match(r"\s+(\d+)\s+\[(.)\]\s+(.*)", line)
        if m:
            counts[class_of(m[2], m[3])] += int(m[1])
    return counts


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    names = [os.path.basename(p) for p in sys.argv[1:]]
    cols = [profile(p) for p in sys.argv[1:]]
    width = max(12, *(len(n) + 2 for n in names))
    print("%-30s" % "ms of CPU" + "".join(n.rjust(width) for n in names))
    for c in CLASSES:
        print("%-30s" % c + "".join(str(col[c]).rjust(width) for col in cols))
    totals = [sum(v for k, v in col.items() if k not in ("benchmark", "idle")) for col in cols]
    print("%-30s" % "total (no benchmark, no idle)" + "".join(str(t).rjust(width) for t in totals))


if __name__ == "__main__":
    main()
