#!/usr/bin/env python3
"""Same-machine JAX/XLA baseline for ``ringsam bench step``.

What it measures
----------------
Wall time of ONE training step of WideResnet16x4 (blocks_per_group=2,
channel_multiplier=4, 10 classes; the Flax-linen port of the SAM reference in
tests/fixtures/make_wrn_fixture.py, imported from there) on CPU, float32, batch 64
(``--batch``) of synthetic 32x32x3 N(0,1) images with uniform random labels:

  sgd  one jax.jit'd function: value_and_grad of
           mean softmax cross-entropy (no label smoothing) + 0.5*wd*sum(w^2)
           (wd=5e-4, over ALL params incl. BN scale/bias and biases, as the reference)
       with BN in train mode (batch statistics, mutable batch_stats, momentum 0.9),
       then optax.sgd(lr=0.01, momentum=0.9, nesterov=True), which is the reference's
       flax.optim.Momentum(nesterov=True):  m = 0.9 m + g;  w -= lr (g + 0.9 m).
  sam  one jax.jit'd function (the reference's train_step with SAM):
       g1 = grad at w (its updated batch_stats are kept);
       e  = rho * g1 / ||g1||   (global L2 norm over all leaves, rho=0.05, no epsilon);
       g2 = grad at w + e (its batch_stats are discarded);
       same Nesterov update of w with g2.

Params, BN stats and optimizer state are donated to the jit'd step and threaded
through the loop, as in a real training loop. Each variant is compiled and run
twice as warm-up, then ``--iters`` (default 5) steps are timed individually with
jax.block_until_ready; the medians are reported. Compile time is not included.

Threads / XLA flags
-------------------
No XLA flags are set: default XLA CPU backend, which uses all cores
(``threads`` in the output is os.cpu_count()). If XLA_FLAGS is set in the
environment it is reported (``xla_flags``) but not changed. JAX_PLATFORMS defaults
to cpu.

How to run (from the repo root; do not run other heavy work at the same time)
----------------------------------------------------------------------------
    .venv-fixtures/bin/python benches/jax_step_baseline.py --json
    .venv-fixtures/bin/python benches/jax_step_baseline.py --batch 64 --iters 5

With --json it prints exactly one JSON object on stdout:
  {"framework":"jax","jax_version":...,"model":"WideResnet16x4","batch":64,
   "sgd_ms":...,"sam_ms":...,"sam_over_sgd":...,"threads":...}
(plus "flax_version", "optax_version", "iters", "xla_flags"). Progress goes to stderr.
"""

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
_FIXTURE_SCRIPT = os.path.join(HERE, "..", "tests", "fixtures", "make_wrn_fixture.py")
_spec = importlib.util.spec_from_file_location("make_wrn_fixture", _FIXTURE_SCRIPT)
wrn_port = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(wrn_port)
# The fixture script turns on float64 at import; this benchmark is float32.
jax.config.update("jax_enable_x64", False)

import flax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

NUM_CLASSES = 10
WEIGHT_DECAY = 5e-4
LR = 0.01
MOMENTUM = 0.9
RHO = 0.05


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def build(batch):
    model = wrn_port.WideResnet(blocks_per_group=2, channel_multiplier=4,
                                num_outputs=NUM_CLASSES)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, 32, 32, 3)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, NUM_CLASSES, size=(batch,)).astype(np.int32))
    variables = model.init(jax.random.PRNGKey(0), x[:1], train=False)
    params, stats = variables["params"], variables["batch_stats"]
    tx = optax.sgd(LR, momentum=MOMENTUM, nesterov=True)

    def loss_fn(p, s, x, y):
        logits, mut = model.apply({"params": p, "batch_stats": s}, x, train=True,
                                  mutable=["batch_stats"])
        ce = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))
        l2 = sum(jnp.sum(w ** 2) for w in jax.tree_util.tree_leaves(p))
        return ce + 0.5 * WEIGHT_DECAY * l2, mut["batch_stats"]

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def apply(p, opt, g):
        upd, opt = tx.update(g, opt, p)
        return optax.apply_updates(p, upd), opt

    def sgd_step(p, s, opt, x, y):
        (loss, s), g = grad_fn(p, s, x, y)
        p, opt = apply(p, opt, g)
        return p, s, opt, loss

    def sam_step(p, s, opt, x, y):
        (loss, s_new), g = grad_fn(p, s, x, y)
        norm = jnp.sqrt(sum(jnp.sum(v ** 2) for v in jax.tree_util.tree_leaves(g)))
        p_noised = jax.tree_util.tree_map(lambda w, gg: w + RHO * gg / norm, p, g)
        _, g2 = grad_fn(p_noised, s, x, y)  # its batch stats are discarded
        p, opt = apply(p, opt, g2)
        return p, s_new, opt, loss

    jit = lambda f: jax.jit(f, donate_argnums=(0, 1, 2))  # noqa: E731
    return params, stats, tx, x, y, jit(sgd_step), jit(sam_step)


def time_step(name, step, params, stats, tx, x, y, iters):
    copy = lambda t: jax.tree_util.tree_map(jnp.copy, t)  # noqa: E731 (steps donate)
    p, s = copy(params), copy(stats)
    opt = tx.init(p)
    t0 = time.perf_counter()
    compiled = step.lower(p, s, opt, x, y).compile()
    log(f"{name}: compiled in {time.perf_counter() - t0:.1f} s")
    for _ in range(2):  # warm-up
        p, s, opt, loss = jax.block_until_ready(compiled(p, s, opt, x, y))
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        p, s, opt, loss = jax.block_until_ready(compiled(p, s, opt, x, y))
        times.append((time.perf_counter() - t0) * 1e3)
        log(f"{name}: step {i} {times[-1]:.1f} ms  loss {float(loss):.4f}")
    if not np.isfinite(float(loss)):
        raise RuntimeError(f"{name}: non-finite loss {float(loss)}")
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    log(f"jax {jax.__version__} flax {flax.__version__} optax {optax.__version__} "
        f"devices {jax.devices()} cpu_count {os.cpu_count()} "
        f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}")
    params, stats, tx, x, y, sgd_step, sam_step = build(args.batch)
    sgd_ms = time_step("sgd", sgd_step, params, stats, tx, x, y, args.iters)
    sam_ms = time_step("sam", sam_step, params, stats, tx, x, y, args.iters)

    out = {
        "framework": "jax",
        "jax_version": jax.__version__,
        "flax_version": flax.__version__,
        "optax_version": optax.__version__,
        "model": "WideResnet16x4",
        "batch": args.batch,
        "iters": args.iters,
        "sgd_ms": round(sgd_ms, 2),
        "sam_ms": round(sam_ms, 2),
        "sam_over_sgd": round(sam_ms / sgd_ms, 3),
        "threads": os.cpu_count(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }
    if args.json:
        print(json.dumps(out))
    else:
        print(f"WideResnet16x4 batch {args.batch}, jax {jax.__version__}, "
              f"{os.cpu_count()} threads (median of {args.iters})")
        print(f"  SGD step {sgd_ms:9.1f} ms  {args.batch / sgd_ms * 1e3:8.1f} images/s")
        print(f"  SAM step {sam_ms:9.1f} ms  {args.batch / sam_ms * 1e3:8.1f} images/s")
        print(f"  SAM/SGD  {sam_ms / sgd_ms:9.2f}x")


if __name__ == "__main__":
    main()
