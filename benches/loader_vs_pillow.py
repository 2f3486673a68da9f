#!/usr/bin/env python3
"""`ringsam bench loader` against Pillow, same images, same run: decode + random-resized crop +
bicubic resize to 224 + flip, per core.

Makes ~500x375 quality-90 JPEGs (smooth gradients, shapes and noise, so they compress like
photos rather than like flat colour), packs them with `ringsam data pack`, then times:
  - Pillow (libjpeg-turbo), pinned to one core: Image.open + draft-free decode, a random crop of the reference's
    area/aspect ranges, resize(BICUBIC), flip, to float32 — one process, one core;
  - ringsam with N decoder threads for each N of --workers (default 1,2), the whole process
    (reader, decoders, collator) pinned to N cores, per core = total / N; for each JPEG decoder
    the binary has (zune; with
    `--features turbojpeg` also turbo = libjpeg-turbo decoding only the crop, and turbo-reduced =
    also at a reduced DCT scale).
Run from the repository root after `cargo build --release [--features turbojpeg]`, with the
interop venv (Pillow):
    .venv-interop/bin/python benches/loader_vs_pillow.py [--images 1200]
"""
import argparse
import json
import math
import os
import random
import subprocess
import tempfile
import time

import numpy as np
from PIL import Image, ImageDraw


def photo_like(rng, w=500, h=375):
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w * 255, y / h * 255, (x + y) / (w + h) * 255], axis=-1)
    base += rng.normal(0, 12, size=base.shape)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")
    d = ImageDraw.Draw(img)
    for _ in range(12):
        x0, y0 = rng.integers(0, w), rng.integers(0, h)
        d.ellipse([x0, y0, x0 + rng.integers(10, 150), y0 + rng.integers(10, 150)], fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return img


def pillow_pipeline(paths, size=224):
    # One core, as ringsam's one-worker run below (taskset): per-core rates compare like for like.
    cpus = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cpus)})
    try:
        return _pillow_pipeline(paths, size)
    finally:
        os.sched_setaffinity(0, cpus)


def _pillow_pipeline(paths, size):
    rnd = random.Random(0)
    t = time.perf_counter()
    for p in paths:
        img = Image.open(p).convert("RGB")
        w, h = img.size
        for _ in range(10):
            area = w * h * rnd.uniform(0.08, 1.0)
            ratio = rnd.uniform(3 / 4, 4 / 3)
            cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
            if 0 < cw <= w and 0 < ch <= h:
                x0, y0 = rnd.randint(0, w - cw), rnd.randint(0, h - ch)
                break
        else:
            cw = ch = min(w, h)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
        img = img.resize((size, size), Image.BICUBIC, box=(x0, y0, x0 + cw, y0 + ch))
        if rnd.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        np.asarray(img, dtype=np.float32)
    return len(paths) / (time.perf_counter() - t)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=1200)
    ap.add_argument("--ringsam", default="target/release/ringsam")
    ap.add_argument("--workers", default="1,2", help="comma list of decoder-thread counts")
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i in range(a.images):
            d = os.path.join(tmp, "folder", f"class{i % 10}")
            os.makedirs(d, exist_ok=True)
            p = os.path.join(d, f"{i:05}.jpg")
            photo_like(rng).save(p, "JPEG", quality=90)
            paths.append(p)
        mean_kb = sum(os.path.getsize(p) for p in paths) / len(paths) / 1024
        subprocess.run([a.ringsam, "data", "pack", "--from", os.path.join(tmp, "folder"), "--to", os.path.join(tmp, "shards"),
                        "--format", "wds", "--shard-size", "100"], check=True, capture_output=True)
        pillow = pillow_pipeline(paths)
        rows = {}
        for decoder in ("zune", "turbo", "turbo-reduced"):
            for workers in [int(w) for w in a.workers.split(",")]:
                # N workers: the whole process (reader, decoders, collator) pinned to N cores.
                cpus = sorted(os.sched_getaffinity(0))
                if workers > len(cpus):
                    continue
                pin = ["taskset", "-c", ",".join(str(c) for c in cpus[:workers])]
                run = subprocess.run(pin + [a.ringsam, "--threads", "1", "bench", "loader", "--data", os.path.join(tmp, "shards"),
                                      "--workers", str(workers), "--num-classes", "10", "--decoder", decoder, "--json"],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    print(f"  ({decoder}: {run.stderr.strip().splitlines()[-1]})")
                    break
                rows[(decoder, workers)] = json.loads(run.stdout)
        pillow_after = pillow_pipeline(paths)
        print(f"{a.images} JPEGs, 500x375, quality 90, mean {mean_kb:.0f} KiB; output 224x224")
        print(f"  Pillow (1 core):        {pillow:7.1f} images/s before, {pillow_after:7.1f} after")
        pillow = (pillow + pillow_after) / 2
        for (d, w), r in rows.items():
            cores = w
            per_core = r['images_per_s'] / cores
            print(f"  ringsam {d:13} {w} worker(s) on {cores} core(s): {r['images_per_s']:7.1f} images/s, {per_core:7.1f} per core"
                  f"  ({per_core / pillow:.2f}x Pillow per core)")

if __name__ == "__main__":
    main()
