#!/usr/bin/python3
"""The Gloo baseline for `ringsam bench allreduce`: torch.distributed's all_reduce on the Gloo
backend (ring-chunked over TCP), N local processes, the same timing rules as ringsam's bench
(one warm-up, a one-value all-reduce as a barrier before each timed op, mean of the timed ops,
busbw = algbw * 2(n-1)/n, every result checked exactly).

Run with Debian's CPU PyTorch (apt-get install python3-torch), which ships Gloo:
    /usr/bin/python3 benches/gloo_allreduce_baseline.py --nproc 4 --sizes 64M --iters 5
Prints one line per size in ringsam's table format so the two can be read side by side.
"""
import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def parse_size(s):
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(s[-1].upper(), 1)
    return int(s[:-1] if mult > 1 else s) * mult


def parse_sizes(spec):
    out = []
    for part in spec.split(","):
        if ".." in part:
            lo, hi = (parse_size(x) for x in part.split(".."))
            while lo <= hi:
                out.append(lo)
                lo *= 2
        else:
            out.append(parse_size(part))
    return [b // 4 * 4 for b in out]


def worker(rank, world, port, sizes, iters, results):
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    total = world * (world + 1) / 2
    rows = []
    for nbytes in sizes:
        count = nbytes // 4
        idx = torch.arange(count, dtype=torch.int64) % 13
        pattern = (idx * (rank + 1)).to(torch.float32)
        expected = idx.to(torch.float32) * total
        buf = pattern.clone()
        dist.all_reduce(buf)  # warm-up
        ok = torch.equal(buf, expected)
        barrier = torch.zeros(1)
        elapsed = 0.0
        for _ in range(iters):
            buf.copy_(pattern)
            dist.all_reduce(barrier)
            t = time.perf_counter()
            dist.all_reduce(buf)
            elapsed += time.perf_counter() - t
            ok &= torch.equal(buf, expected)
        rows.append((nbytes, count, elapsed / iters, ok))
    if rank == 0:
        results.extend(rows)
    dist.destroy_process_group()


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4)
    ap.add_argument("--sizes", default="64M")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--port", type=int, default=29517)
    a = ap.parse_args()
    sizes = parse_sizes(a.sizes)
    with mp.Manager() as m:
        results = m.list()
        mp.spawn(worker, args=(a.nproc, a.port, sizes, a.iters, results), nprocs=a.nproc)
        print(f"{'transport':>9} {'nproc':>6} {'size(B)':>12} {'count':>12} {'time(us)':>12} {'algbw':>10} {'busbw':>10} {'ok':>6}")
        for nbytes, count, t, ok in results:
            algbw = nbytes / t / 1e9
            busbw = algbw * 2 * (a.nproc - 1) / a.nproc
            print(f"{'gloo':>9} {a.nproc:>6} {nbytes:>12} {count:>12} {t * 1e6:>12.1f} {algbw:>10.3f} {busbw:>10.3f} {'yes' if ok else 'NO':>6}")


if __name__ == "__main__":
    main()
