#!/usr/bin/env bash
# Checks that Python's TensorBoard reader and safetensors open what ringsam writes.
# Creates .venv-interop (once) from scripts/interop-requirements.txt, builds ringsam, runs the check.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-interop
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/interop-requirements.txt
fi
cargo build --release --locked --bin ringsam
"$venv/bin/python" scripts/interop_check.py target/release/ringsam
