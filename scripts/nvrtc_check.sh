#!/usr/bin/env bash
# Compiles every CUDA kernel (crates/kernels/cu) to PTX for the architectures we ship for, with
# NVIDIA's NVRTC library from PyPI: no GPU and no CUDA toolkit needed. Part of the test command
# (scripts/test.sh). Creates .venv-cuda (once) from scripts/cuda-requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
venv=.venv-cuda
ensure_venv "$venv" scripts/cuda-requirements.txt
lib=$("$venv/bin/python" -c 'import nvidia, os; print(os.path.join(list(nvidia.__path__)[0], "cu13", "lib"))')
[ -e "$lib/libnvrtc.so.13" ] || { echo "nvrtc_check: no libnvrtc.so.13 in $lib" >&2; exit 1; }
out=$(LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" \
    cargo test -p ringsam-kernels --features cuda --locked --lib nvrtc -- --nocapture 2>&1) || { echo "$out" >&2; exit 1; }
grep -q 'NVRTC: .* sources compiled' <<<"$out" || { echo "$out" >&2; echo "nvrtc_check: the compile check did not run" >&2; exit 1; }
grep 'NVRTC: ' <<<"$out" >&2
