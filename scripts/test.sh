#!/usr/bin/env bash
# The whole test suite in one command: bring up local Postgres and Redis when nothing answers,
# install what the tests need from the OS packages, then run every test, doc test and a
# compile-and-run-once pass of every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

scripts/services.sh up
scripts/tools.sh

cargo test --workspace --all-targets --locked
cargo test --workspace --doc --locked
# Tests behind non-default features (the workspace run above uses default features).
cargo test -p unite-hotkey --features cluster --test cluster --test cluster_redis_cluster --locked
