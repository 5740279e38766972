#!/usr/bin/env bash
# The benchmark suite: every crate's criterion benchmarks, each run side by side with the raw
# crate it wraps (the peer is named in each benchmark's id), then the service load test
# (scripts/load.sh: the cached route against a bare axum route in the same binary).
# Against the local Postgres and Redis (started by scripts/services.sh when nothing answers).
# Criterion's HTML report, with the latency distributions, ends up under
# $CARGO_TARGET_DIR/criterion/report/index.html.
#
#   scripts/bench.sh                      # everything (about 15 minutes on 2 cores)
#   scripts/bench.sh -p unite-ratelimit   # one crate's benchmarks, no load test
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
scripts/services.sh up >/dev/null

if [ "$#" -gt 0 ]; then
  cargo bench --locked --benches "$@" -- --warm-up-time 1 --measurement-time 3
  exit 0
fi
cargo bench --workspace --benches --locked -- --warm-up-time 1 --measurement-time 3
scripts/load.sh
echo "criterion report: $CARGO_TARGET_DIR/criterion/report/index.html"
