#!/usr/bin/env bash
# Issue 19's chaos trials in full: N trials (default 20) on three loopback workers of WRN-10-1
# with --min_replicas 3, cycling through kill -9 and restart, a kill of the whole job aimed at a
# checkpoint write (the trial polls for the write's .tmp directory), two kills in a row (the
# second during the re-formation), SIGSTOP for five heartbeats, and a kill of the whole job at a
# random step (recovery from disk). Every trial must end with parameters bitwise equal to an
# uninterrupted run's and every batch with the same examples (--log_sample_ids). Prints
# one line per trial and the table (trials, recoveries from memory and from disk, median and
# max seconds from the fault to the next generation, steps redone). CI runs 3 of these trials
# (`cargo test --test integration elastic::chaos`); this script runs them all.
#
#   scripts/chaos.sh [TRIALS]
set -euo pipefail
cd "$(dirname "$0")/.."
trials="${1:-20}"
RINGSAM_CHAOS_TRIALS="$trials" cargo test --test integration elastic::chaos -- --nocapture --test-threads 1 2>&1 |
    grep -E '^chaos trial|^\||test result|panicked'
