#!/usr/bin/env bash
# Checks that Python's TensorBoard reader and safetensors open what ringsam writes.
# Usage: scripts/interop_check.sh [PATH/TO/ringsam]   (default: build and use target/release/ringsam)
# Creates .venv-interop (once) from scripts/interop-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
venv=.venv-interop
ensure_venv "$venv" scripts/interop-requirements.txt
bin=${1:-}
if [ -z "$bin" ]; then
    cargo build --release --locked --bin ringsam
    bin=target/release/ringsam
fi
"$venv/bin/python" scripts/interop_check.py "$bin"
