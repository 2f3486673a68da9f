#!/usr/bin/env bash
# The test command (README.md "Tests"; .ci/run calls it).
#
# 0. formatting (cargo fmt --check) and lints (clippy -D warnings, with and without --features cuda);
# 1. the whole workspace's tests (unit, gradient checks, Flax fixture, CLI end to end, the ring
#    between network namespaces: needs root, as this project's machines and CI have);
# 2. the CUDA feature must compile on a machine with no GPU and no CUDA toolkit (cudarc loads
#    CUDA at run time). Built with the test profile, so it reuses step 1's compiled dependencies.
#    Every CUDA kernel is compiled to PTX by NVRTC (scripts/nvrtc_check.sh: NVIDIA's library from
#    PyPI in .venv-cuda; no GPU); step 1 already ran the kernels, the layers, whole models and the
#    SAM step under emulation (crates/kernels-emu) against the CPU engine; the GPU-only tests
#    (crates/bench/tests/cuda_device.rs) run and, without a GPU, print what they skipped;
# 3. the optional libjpeg-turbo decoder (feature `turbojpeg`, built from its bundled source): its
#    tests need cmake and nasm, installed with apt-get when missing and possible; otherwise the
#    script says that they did not run;
# 4. the measurement build's unsealed QUIC cipher (feature `unsealed-quic-bench`, docs/BENCHMARKS.md
#    "What the AEAD costs"): lints of every crate with it (re-checking ringsam-collective and what
#    depends on it), and its tests (its keys, and a ring over both QUIC drivers), recompiling only
#    ringsam-collective;
# 5. the `unsafe` modules' tests under valgrind memcheck (scripts/memcheck.sh, ~40 s);
# 6. Python's TensorBoard reader and safetensors must open what `ringsam train` writes (a venv of
#    its own, created on first run), using the binary step 2 left in target/debug;
# 7. k8s/ rendered with kubectl's kustomize (and Debian's kustomize v2.0.3), validated against
#    Kubernetes 1.33's schemas and the JobSet CRD, and its pods checked against `ringsam worker`
#    (scripts/k8s_check.sh; a venv of its own).
# The container image and the Kubernetes Job's pods as containers (tests/container.rs →
# scripts/image_check.sh, scripts/k8s_local.sh) are tested in step 1 when a Docker daemon and
# root are present (the base image is debootstrapped once and cached); the tests say NOT RUN
# otherwise.
# Fixtures are committed; regenerating them (tests/fixtures/make_wrn_fixture.py) is not part of
# the test run.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# System tools some tests use, installed when missing and possible (root with apt-get):
# iproute2 and ethtool for the network-namespace ring test (tests/netns.rs), cmake and nasm for
# the turbojpeg feature.
need=()
for tool in ip:iproute2 tc:iproute2 ethtool:ethtool cmake:cmake nasm:nasm; do
    command -v "${tool%%:*}" >/dev/null 2>&1 || need+=("${tool##*:}")
done
if [ ${#need[@]} -gt 0 ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get install -y -q "${need[@]}" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "${need[@]}" >/dev/null; } || true
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo clippy --workspace --all-targets --locked --features cuda -- -D warnings
cargo test --workspace --locked
cargo build --workspace --locked --profile test --features cuda
# The GPU-only tests, compiled with CUDA support; without a GPU each says what it skipped.
cargo test -p ringsam-bench --locked --features cuda --test cuda_device -- --nocapture
./scripts/nvrtc_check.sh
if command -v cmake >/dev/null 2>&1 && command -v nasm >/dev/null 2>&1; then
    cargo test -p ringsam-data --locked --features turbojpeg
else
    echo "test.sh: NOT RUN: the turbojpeg feature's tests (need cmake and nasm: apt-get install cmake nasm)" >&2
fi
cargo clippy --workspace --all-targets --locked --features unsealed-quic-bench -- -D warnings
cargo test -p ringsam-collective --locked --features unsealed-quic-bench --lib --test quic unsealed
./scripts/memcheck.sh
./scripts/interop_check.sh target/debug/ringsam
./scripts/k8s_check.sh target/debug/ringsam
