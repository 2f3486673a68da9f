#!/usr/bin/env bash
# The `unsafe` code under valgrind memcheck: one small test per module that holds some
# (op_buffer's shared allocation and loans, batch_slots' uninitialised batch memory, the shard
# loader that writes into it). Miri would be the better tool but needs a nightly toolchain this
# project cannot fetch; memcheck finds invalid reads and writes, use of uninitialised values in
# branches, and use after free, at ~50x the normal run time, so only these tests run under it.
# scripts/test.sh calls this; valgrind is installed with apt-get when missing and possible.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v valgrind >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get install -y -q valgrind >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q valgrind >/dev/null; }
    fi
fi
if ! command -v valgrind >/dev/null 2>&1; then
    echo "memcheck.sh: NOT RUN: valgrind is not installed (apt-get install valgrind)" >&2
    exit 0
fi
triple="$(uname -m)-unknown-linux-gnu"
runner_var="CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUNNER"
export "$runner_var"="valgrind --quiet --error-exitcode=99 --leak-check=no --track-origins=yes"
cargo test --locked -p ringsam-ring --lib op_buffer::
cargo test --locked -p ringsam-data --lib batch_slots::
cargo test --locked -p ringsam-data --test shard_loader same_batches_with_one_and_with_two_workers
