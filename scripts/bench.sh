#!/usr/bin/env bash
# The benchmark suite: the unite-benches package in benches/, every crate's criterion benchmarks,
# each run side by side with the raw crate it wraps (each bench file is named after the unite
# crate and the peer it runs against, and the peer is named in each benchmark's id), then the
# service load test (scripts/load.sh: the cached route against a bare axum route in the same
# binary). Against the local Postgres and Redis (started by scripts/services.sh when nothing
# answers). Criterion's HTML report, with the latency distributions, ends up under
# $CARGO_TARGET_DIR/criterion/report/index.html.
#
#   scripts/bench.sh                                      # everything (about 15 minutes on 2 cores)
#   scripts/bench.sh --bench ratelimit_vs_governor_fred   # one bench file, no load test
#   scripts/bench.sh --bench cache_vs_moka_fred -- l1_hit # criterion arguments after --
#   scripts/bench.sh --list                               # the bench names
#
# --bench may be repeated; any other argument before -- goes to cargo bench, anything after --
# to the benchmark, with --warm-up-time 1 --measurement-time 3 unless it sets them itself.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"

names() { for f in benches/*.rs; do basename "$f" .rs; done; }

cargo_args=()
criterion_args=()
whole_suite=1
while [ "$#" -gt 0 ]; do
  whole_suite=0
  case "$1" in
    --)
      shift
      criterion_args+=("$@")
      break
      ;;
    --list)
      names
      exit 0
      ;;
    -p | --package | --package=* | -p* | --workspace)
      printf 'bench: the benchmarks are one package (benches/); pick one with --bench <name>:\n' >&2
      names | sed 's/^/  /' >&2
      exit 2
      ;;
    *) cargo_args+=("$1") ;;
  esac
  shift
done

# Criterion refuses an option given twice: a default only where the caller set none.
case " ${criterion_args[*]-} " in *" --warm-up-time"*) ;; *) criterion_args+=(--warm-up-time 1) ;; esac
case " ${criterion_args[*]-} " in *" --measurement-time"*) ;; *) criterion_args+=(--measurement-time 3) ;; esac

scripts/services.sh up >/dev/null

if [ "$whole_suite" -eq 0 ]; then
  cargo bench -p unite-benches --locked ${cargo_args[@]+"${cargo_args[@]}"} -- "${criterion_args[@]}"
  exit 0
fi
cargo bench -p unite-benches --benches --locked -- "${criterion_args[@]}"
scripts/load.sh
echo "criterion report: $CARGO_TARGET_DIR/criterion/report/index.html"
