#!/usr/bin/env bash
# The test command (README.md "Tests"; .ci/run calls it).
#
# 1. the whole workspace's tests (unit, gradient checks, Flax fixture, CLI end to end);
# 2. the CUDA feature must compile on a machine with no GPU and no CUDA toolkit (cudarc loads
#    CUDA at run time), so a build with `--features cuda` is part of the tests.
# Fixtures are committed; regenerating them (tests/fixtures/make_wrn_fixture.py) is not part of
# the test run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

cargo test --workspace --locked
cargo build --workspace --locked --features cuda

# Python's TensorBoard reader and safetensors must open what `ringsam train` writes
# (a venv of its own, created on first run).
./scripts/interop_check.sh
