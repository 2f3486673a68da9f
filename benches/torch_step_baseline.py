#!/usr/bin/env python3
"""The baseline `ringsam bench step --device cuda` is compared with: PyTorch eager, cuDNN's
benchmark mode, channels_last, TF32 on, the same model definitions and the same two-pass SAM step.

Models, as ringsam defines them (crates/models, after google-research/sam):
- WideResnet{d}x{k}: 3x3 stem of 16 channels; pre-activation blocks (BN+ReLU, conv 3x3 with the
  stride, BN+ReLU, conv 3x3), the shortcut an average pool by the stride and zero channels when the
  width changes, the first block activating before its residual; BN+ReLU, global average pool,
  dense. TensorFlow's SAME padding (a stride-2 3x3 pads 0 before, 1 after).
- Resnet50: v1 with bottlenecks (1x1, 3x3 with the stride, 1x1 with 4x the width), projection
  shortcuts (1x1 conv + BN) where the shape changes, a 7x7/2 stem and a 3x3/2 max pool.
- efficientnet-b0 ... b7: torchvision's EfficientNet (the same stages, widths, depths,
  squeeze-excite, swish and stochastic depth as ringsam's, which follows the SAM reference; it
  pads symmetrically where ringsam pads as TensorFlow does, which costs the same).

SGD step: forward, cross-entropy, backward, Nesterov momentum with weight decay. SAM step (Foret et
al.; the reference's order): pass 1's gradient g, w + rho*g/||g|| (global norm), pass 2 with
batch-norm statistics left alone (momentum 0, as davda54/sam does), back to w, the update.

Prints one JSON object per model: images/s of each step and peak memory (torch.cuda.
max_memory_allocated, and reserved). On a machine without CUDA it runs on the CPU, on `--threads`
threads (oneDNN), in the memory format `--memory_format` (on CPU `auto` tries both for a step
and keeps the faster); benches/cpu_step_vs_torch.py runs it beside `ringsam bench step` there.
"""

import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

EFFICIENTNETS = {f"efficientnet-b{i}" for i in range(8)}


class SameConv(nn.Conv2d):
    """A convolution with TensorFlow's SAME padding (the extra row and column after)."""

    def __init__(self, c_in, c_out, k, stride=1):
        super().__init__(c_in, c_out, k, stride=stride, padding=0, bias=False)

    def forward(self, x):
        h, w = x.shape[-2:]
        s, k = self.stride[0], self.kernel_size[0]
        ph = max((math.ceil(h / s) - 1) * s + k - h, 0)
        pw = max((math.ceil(w / s) - 1) * s + k - w, 0)
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))
        return super().forward(x)


class WideBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, activate_before_residual):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in, momentum=0.1, eps=1e-5), SameConv(c_in, c_out, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out, momentum=0.1, eps=1e-5), SameConv(c_out, c_out, 3, 1)
        self.stride, self.pad, self.abr = stride, c_out - c_in, activate_before_residual

    def forward(self, x):
        a = F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(a))))
        s = a if self.abr else x
        if self.stride > 1:
            s = F.avg_pool2d(s, self.stride)
        if self.pad:
            s = F.pad(s, (0, 0, 0, 0, 0, self.pad))
        return y + s


class WideResNet(nn.Module):
    def __init__(self, depth, k, classes):
        super().__init__()
        n = (depth - 4) // 6
        layers, c = [], 16
        for g, (width, stride) in enumerate([(16 * k, 1), (32 * k, 2), (64 * k, 2)]):
            for i in range(n):
                layers.append(WideBlock(c, width, stride if i == 0 else 1, g == 0 and i == 0))
                c = width
        self.stem, self.blocks = SameConv(3, 16, 3), nn.Sequential(*layers)
        self.bn, self.fc = nn.BatchNorm2d(c), nn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return self.fc(x.mean(dim=(2, 3)))


class Bottleneck(nn.Module):
    def __init__(self, c_in, f, stride):
        super().__init__()
        self.c1, self.b1 = SameConv(c_in, f, 1), nn.BatchNorm2d(f)
        self.c2, self.b2 = SameConv(f, f, 3, stride), nn.BatchNorm2d(f)
        self.c3, self.b3 = SameConv(f, 4 * f, 1), nn.BatchNorm2d(4 * f)
        self.proj = None
        if stride != 1 or c_in != 4 * f:
            self.proj = nn.Sequential(SameConv(c_in, 4 * f, 1, stride), nn.BatchNorm2d(4 * f))

    def forward(self, x):
        y = F.relu(self.b1(self.c1(x)))
        y = F.relu(self.b2(self.c2(y)))
        y = self.b3(self.c3(y))
        return F.relu(y + (self.proj(x) if self.proj is not None else x))


class ResNet50(nn.Module):
    def __init__(self, classes):
        super().__init__()
        layers, c = [], 64
        for stage, (blocks, f) in enumerate(zip([3, 4, 6, 3], [64, 128, 256, 512])):
            for i in range(blocks):
                layers.append(Bottleneck(c, f, 2 if i == 0 and stage > 0 else 1))
                c = 4 * f
        self.stem, self.bn, self.blocks, self.fc = SameConv(3, 64, 7, 2), nn.BatchNorm2d(64), nn.Sequential(*layers), nn.Linear(c, classes)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), value=float("-inf")), 3, 2)
        return self.fc(self.blocks(x).mean(dim=(2, 3)))


def build(name, classes):
    if name.startswith("WideResnet"):
        d, k = name[len("WideResnet"):].split("x")
        return WideResNet(int(d), int(k), classes)
    if name == "Resnet50":
        return ResNet50(classes)
    if name in EFFICIENTNETS:
        import torchvision

        return getattr(torchvision.models, name.replace("-", "_"))(num_classes=classes)
    raise SystemExit(f"unknown model {name}")


def set_bn_momentum(model, momentum):
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = momentum


def sgd_step(model, opt, x, y):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()


def sam_step(model, opt, x, y, rho):
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    params = [p for p in model.parameters() if p.grad is not None]
    with torch.no_grad():
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
        scale = rho / (norm + 1e-12)
        eps = [p.grad * scale for p in params]
        for p, e in zip(params, eps):
            p.add_(e)
    opt.zero_grad(set_to_none=True)
    set_bn_momentum(model, 0.0)
    F.cross_entropy(model(x), y).backward()
    set_bn_momentum(model, 0.1)
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)
    opt.step()


def time_steps(model, opt, x, y, iters, rho, sync):
    """Medians of `iters` SGD and SAM steps, alternating, after one warm-up step of each."""
    times = {"sgd": [], "sam": []}
    steps = {"sgd": lambda: sgd_step(model, opt, x, y), "sam": lambda: sam_step(model, opt, x, y, rho)}
    for run in steps.values():  # warm-up: cuDNN's benchmark mode picks its algorithms here
        run()
    sync()
    if x.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(iters):
        for kind, run in steps.items():
            sync()
            t = time.perf_counter()
            run()
            sync()
            times[kind].append(time.perf_counter() - t)
    return {k: sorted(v)[len(v) // 2] for k, v in times.items()}, times


def setup(name, batch, side, classes, device, fmt):
    model = build(name, classes).to(device).to(memory_format=fmt)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4)
    x = torch.randn(batch, 3, side, side, device=device).to(memory_format=fmt)
    y = torch.randint(0, classes, (batch,), device=device)
    return model, opt, x, y


def faster_format(name, batch, side, classes, device):
    """On CPU oneDNN's speed depends on the layout: one SGD step in each, keep the faster."""
    best = None
    for fmt in (torch.contiguous_format, torch.channels_last):
        model, opt, x, y = setup(name, batch, side, classes, device, fmt)
        sgd_step(model, opt, x, y)  # warm-up
        t = time.perf_counter()
        sgd_step(model, opt, x, y)
        t = time.perf_counter() - t
        if best is None or t < best[1]:
            best = (fmt, t)
    return best[0]


FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def measure(name, batch, side, classes, iters, device, rho, fmt_name):
    if fmt_name == "auto":
        fmt = torch.channels_last if device.type == "cuda" else faster_format(name, batch, side, classes, device)
    else:
        fmt = FORMATS[fmt_name]
    model, opt, x, y = setup(name, batch, side, classes, device, fmt)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    med, times = time_steps(model, opt, x, y, iters, rho, sync)
    out = {
        "framework": f"pytorch {torch.__version__}",
        "device": str(device),
        "threads": torch.get_num_threads(),
        "memory_format": "channels_last" if fmt == torch.channels_last else "contiguous",
        "model": name,
        "batch": batch,
        "image_size": side,
        "num_classes": classes,
        "sgd_ms": med["sgd"] * 1e3,
        "sam_ms": med["sam"] * 1e3,
        "sgd_images_per_s": batch / med["sgd"],
        "sam_images_per_s": batch / med["sam"],
        "sgd_samples_ms": [t * 1e3 for t in times["sgd"]],
        "sam_samples_ms": [t * 1e3 for t in times["sam"]],
    }
    if device.type == "cuda":
        out["peak_memory_mb"] = torch.cuda.max_memory_allocated() / 1e6
        out["peak_reserved_mb"] = torch.cuda.max_memory_reserved() / 1e6
    return out


def parse_spec(spec):
    """name:batch:side[:classes]; classes default to 1000 for the ImageNet models, 10 otherwise."""
    parts = spec.split(":")
    if len(parts) not in (3, 4):
        raise SystemExit(f"--models: {spec!r} is not name:batch:side[:classes]")
    name, batch, side = parts[0], int(parts[1]), int(parts[2])
    classes = int(parts[3]) if len(parts) == 4 else (1000 if name == "Resnet50" or name in EFFICIENTNETS else 10)
    return name, batch, side, classes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="WideResnet28x10:128:32,Resnet50:256:224", help="name:batch:side[:classes], comma-separated")
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--rho", type=float, default=0.05)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch.set_num_threads); default: PyTorch's")
    ap.add_argument("--memory_format", choices=["auto", *FORMATS], default="auto")
    args = ap.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    device = torch.device(args.device)
    for spec in args.models.split(","):
        name, batch, side, classes = parse_spec(spec)
        print(json.dumps(measure(name, batch, side, classes, args.iters, device, args.rho, args.memory_format)), flush=True)


if __name__ == "__main__":
    main()
