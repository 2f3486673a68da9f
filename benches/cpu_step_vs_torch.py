#!/usr/bin/env python3
"""ringsam's CPU training step beside PyTorch eager's, in the same run, as ratios.

For each model, rounds alternate (ringsam first in odd rounds, PyTorch first in even ones):
`ringsam bench step --json` and `benches/torch_step_baseline.py --device cpu`, both on
`--threads` threads, the same batch, image size and classes, SGD with Nesterov momentum and the
same two-pass SAM step. Each run reports the median of its `--iters` steps; the ratio of a round
is PyTorch's median step time over ringsam's (above 1: ringsam is faster), and the table gives
the median ratio over the rounds with its range.

PyTorch is Debian's `python3-torch` and `python3-torchvision` (oneDNN inside), run with
/usr/bin/python3; when they are missing the script installs them with apt-get (root needed).
Each round runs PyTorch in both memory formats (oneDNN's speed depends on it: channels_last is
much the faster for most of these models) and compares with the faster SAM step.

    cargo build --release -p ringsam
    python3 benches/cpu_step_vs_torch.py --ringsam target/release/ringsam --threads 2 --rounds 3

Do not run other heavy work at the same time: both sides share the cores.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"
DEFAULT_MODELS = "Resnet50:8:224,efficientnet-b0:8:224,efficientnet-b3:8:300,WideResnet16x4:64:32"
IMAGENET = {"Resnet50"} | {f"efficientnet-b{i}" for i in range(8)}


def ensure_torch():
    probe = [SYSTEM_PYTHON, "-c", "import torch, torchvision"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        sys.exit("PyTorch is missing: install Debian's python3-torch and python3-torchvision (apt-get, as root)")
    print("installing python3-torch and python3-torchvision (apt-get)", file=sys.stderr, flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "-q", "python3-torch", "python3-torchvision"], check=True, env=env)
    subprocess.run(probe, check=True)


def parse_spec(spec):
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        sys.exit(f"--models: {spec!r} is not name:batch:side[:classes]")
    classes = int(parts[3]) if len(parts) == 4 else (1000 if parts[0] in IMAGENET else 10)
    return parts[0], int(parts[1]), int(parts[2]), classes


def last_json(out, what):
    for line in reversed(out.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    sys.exit(f"{what} printed no JSON object:\n{out}")


def run(cmd, what):
    print("  $ " + " ".join(cmd), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{what} failed ({done.returncode}):\n{done.stderr}")
    return last_json(done.stdout, what)


def ringsam_step(args, name, batch, side, classes):
    cmd = [args.ringsam, "--threads", str(args.threads), "bench", "step", "--model", name, "--batch", str(batch)]
    cmd += ["--image_size", str(side), "--num_classes", str(classes), "--iters", str(args.iters), "--cheaper", "none", "--json"]
    return run(cmd, "ringsam bench step")


def torch_step(args, name, batch, side, classes):
    """PyTorch's step in each memory format asked for; the faster SAM step's run is the baseline."""
    best = None
    for fmt in args.torch_formats.split(","):
        cmd = [SYSTEM_PYTHON, os.path.join(HERE, "torch_step_baseline.py"), "--device", "cpu", "--threads", str(args.threads)]
        cmd += ["--models", f"{name}:{batch}:{side}:{classes}", "--iters", str(args.iters), "--memory_format", fmt]
        got = run(cmd, "torch_step_baseline.py")
        if best is None or got["sam_ms"] < best["sam_ms"]:
            best = got
    return best


def compare(args, spec):
    name, batch, side, classes = parse_spec(spec)
    rounds = []
    for i in range(args.rounds):
        print(f"{name}: round {i + 1} of {args.rounds}", file=sys.stderr, flush=True)
        sides = [ringsam_step, torch_step] if i % 2 == 0 else [torch_step, ringsam_step]
        got = {f.__name__: f(args, name, batch, side, classes) for f in sides}
        rs, pt = got["ringsam_step"], got["torch_step"]
        rounds.append({
            "ringsam_sgd_ms": rs["sgd_ms"], "ringsam_sam_ms": rs["sam_ms"],
            "torch_sgd_ms": pt["sgd_ms"], "torch_sam_ms": pt["sam_ms"],
            "torch_memory_format": pt["memory_format"],
            "sgd_ratio": pt["sgd_ms"] / rs["sgd_ms"], "sam_ratio": pt["sam_ms"] / rs["sam_ms"],
        })
    med = lambda key: statistics.median(r[key] for r in rounds)
    span = lambda key: (min(r[key] for r in rounds), max(r[key] for r in rounds))
    return {
        "model": name, "batch": batch, "image_size": side, "num_classes": classes, "threads": args.threads,
        "ringsam_sgd_ms": med("ringsam_sgd_ms"), "ringsam_sam_ms": med("ringsam_sam_ms"),
        "torch_sgd_ms": med("torch_sgd_ms"), "torch_sam_ms": med("torch_sam_ms"),
        "sgd_ratio": med("sgd_ratio"), "sam_ratio": med("sam_ratio"),
        "sgd_ratio_range": span("sgd_ratio"), "sam_ratio_range": span("sam_ratio"),
        "rounds": rounds,
    }


def table(results):
    lines = [
        "| model, batch, side | ringsam SGD / SAM ms | PyTorch SGD / SAM ms | SGD ratio (range) | SAM ratio (range) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lo_g, hi_g = r["sgd_ratio_range"]
        lo_s, hi_s = r["sam_ratio_range"]
        lines.append(
            f"| {r['model']}, {r['batch']}, {r['image_size']} | {r['ringsam_sgd_ms']:.0f} / {r['ringsam_sam_ms']:.0f} "
            f"| {r['torch_sgd_ms']:.0f} / {r['torch_sam_ms']:.0f} | {r['sgd_ratio']:.2f}× ({lo_g:.2f}–{hi_g:.2f}) "
            f"| {r['sam_ratio']:.2f}× ({lo_s:.2f}–{hi_s:.2f}) |"
        )
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ringsam", default="target/release/ringsam", help="the ringsam binary")
    ap.add_argument("--models", default=DEFAULT_MODELS, help="name:batch:side[:classes], comma-separated")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="threads for both sides")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds per model")
    ap.add_argument("--iters", type=int, default=3, help="timed steps of each kind per run")
    ap.add_argument(
        "--torch_formats",
        default="channels_last,contiguous",
        help="PyTorch memory formats to run each round (the faster SAM step counts); `auto` lets the baseline pick by one step",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per model instead of the table")
    args = ap.parse_args()
    if not os.access(args.ringsam, os.X_OK):
        sys.exit(f"--ringsam {args.ringsam}: not an executable (cargo build --release -p ringsam)")
    if args.rounds < 1 or args.iters < 1 or args.threads < 1:
        sys.exit("--rounds, --iters and --threads must be at least 1")
    ensure_torch()
    results = []
    for spec in args.models.split(","):
        results.append(compare(args, spec))
        if args.json:
            print(json.dumps(results[-1]), flush=True)
    if not args.json:
        print(table(results))


if __name__ == "__main__":
    main()
