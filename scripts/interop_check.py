#!/usr/bin/env python3
"""Interop check: files ringsam writes open in the real Python tools.

Runs a short `ringsam train` on the bundled digits, then
  1. reads its TensorBoard event file with tbparse (which uses tensorboard's own reader) and
     checks the reference's scalar names are there with finite values;
  2. opens the final checkpoint's model.safetensors and optim.safetensors with the `safetensors`
     package (numpy) and checks names, shapes and that the parameter count equals
     `ringsam models --json`.
Exits non-zero with a message on any mismatch. Usage: interop_check.py PATH/TO/ringsam
"""
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
from safetensors.numpy import load_file
from tbparse import SummaryReader


def main() -> int:
    ringsam = sys.argv[1]
    with tempfile.TemporaryDirectory() as out:
        cmd = [ringsam, "--threads", "2", "train", "--dataset", "digits", "--model_name", "WideResnet10x1",
               "--num_epochs", "2", "--batch_size", "64", "--sam_rho", "0.05", "--image_level_augmentations", "none",
               "--output_dir", out]
        subprocess.run(cmd, check=True)
        run_dir = os.path.join(out, "lr_0.1", "wd_0.001", "rho_0.05", "seed_0")
        assert os.path.isdir(run_dir), f"run directory {run_dir} missing: {os.listdir(out)}"

        df = SummaryReader(run_dir).scalars
        tags = set(df["tag"])
        want = {"train_loss", "train_error_rate", "gradient_norm", "param_norm", "learning_rate", "test_loss", "test_error_rate"}
        missing = want - tags
        assert not missing, f"TensorBoard scalars missing: {missing} (have {sorted(tags)})"
        assert all(math.isfinite(v) for v in df["value"]), "non-finite scalar"
        steps = sorted(set(df[df["tag"] == "train_loss"]["step"]))
        assert len(steps) == 2, f"expected one train_loss per epoch, got steps {steps}"
        print(f"tensorboard: {len(df)} scalars, tags {sorted(tags)}, steps {steps}")

        ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
        final = os.path.join(run_dir, "checkpoints", ckpts[-1])
        model = load_file(os.path.join(final, "model.safetensors"))
        optim = load_file(os.path.join(final, "optim.safetensors"))
        models = json.loads(subprocess.run([ringsam, "models", "--json"], check=True, capture_output=True, text=True).stdout)
        want_params = next(m["params"] for m in models if m["name"] == "WideResnet10x1")
        params = {k: v for k, v in model.items() if not k.endswith(("/mean", "/var"))}
        n = sum(int(np.prod(v.shape)) for v in params.values())
        # digits have 1 input channel; `ringsam models` counts 3: the difference is init_conv's kernel.
        assert model["init_conv/kernel"].shape == (3, 3, 1, 16), model["init_conv/kernel"].shape
        assert n == want_params - 3 * 3 * 2 * 16, f"checkpoint holds {n} parameters, expected {want_params - 288}"
        assert model["Dense_0/kernel"].shape == (64, 10)
        assert set(optim) == {f"momentum/{k}" for k in params}, "optimizer state does not mirror the parameters"
        assert all(np.isfinite(v).all() for v in model.values())
        print(f"safetensors: {final}: {len(model)} model tensors ({n} parameters), {len(optim)} optimizer tensors")

    # TFRecord framing (length and data CRC-32C) as TensorBoard's own record reader checks it.
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import PyRecordReader_New
    with tempfile.TemporaryDirectory() as tmp:
        for c in range(2):
            os.makedirs(os.path.join(tmp, "folder", f"class{c}"))
            for i in range(3):
                with open(os.path.join(tmp, "folder", f"class{c}", f"{i}.jpg"), "wb") as f:
                    f.write(bytes([c * 16 + i]) * (50 + i))
        subprocess.run([ringsam, "data", "pack", "--from", os.path.join(tmp, "folder"), "--to", os.path.join(tmp, "shards"),
                        "--format", "tfrecord", "--shard-size", "10"], check=True)
        shard = os.path.join(tmp, "shards", "train-00000-of-00001.tfrecord")
        reader = PyRecordReader_New(shard.encode())
        records = 0
        while True:
            try:
                reader.GetNext()
            except Exception:  # OutOfRangeError at the end; a CRC error would stop early
                break
            assert b"image" in reader.record() and b"label" in reader.record()
            records += 1
        assert records == 6, f"TensorBoard's reader found {records} of 6 records in {shard}"
        print(f"tfrecord: {records} records read back by TensorBoard's reader")
    print("interop check: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
