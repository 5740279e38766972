#!/usr/bin/env bash
# Load test of the example service, on loopback only, bounded in time:
#   1. the cached session validation (GET /api/sessions/validate, warm cache) and a bare axum
#      route with no middleware (GET /bench/bare) in the same binary, each at full speed, in
#      alternating rounds (medians and the median ratio in the summary);
#   2. the cached route again at half of its maximum rate, for its p99.
# Prints requests/s and latency percentiles. Needs wrk (installed from the OS packages when
# missing) and the local services (started by scripts/services.sh).
#
#   scripts/load.sh               # 5 rounds of 5 s a route, 32 connections, 2 wrk threads
#   ROUNDS=3 DURATION=10s CONNECTIONS=64 scripts/load.sh   # PACED_DURATION (10 s) for the p99 run
#   REDIS_URL= scripts/load.sh    # without Redis: in-memory cache, in-process limits
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
DURATION="${DURATION:-5s}"
ROUNDS="${ROUNDS:-5}"
PACED_DURATION="${PACED_DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"
case "$ROUNDS" in
  '' | *[!0-9]* | 0) echo "load: ROUNDS must be a whole number of at least 1, not '$ROUNDS'" >&2; exit 2 ;;
esac

# shellcheck source=scripts/lib/hub-under-load.sh
. scripts/lib/hub-under-load.sh
start_hub_for_load load
rps() { sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p'; }

# The two routes alternate for ROUNDS rounds, so the drifting load of a shared machine falls on
# both alike; the summary gives the medians and the median of the per-round ratios.
bare_all=(); cached_all=(); ratios=(); non2xx=0
for round in $(seq "$ROUNDS"); do
  echo "== round $round of $ROUNDS: bare route (no middleware), GET /bench/bare, $CONNECTIONS connections, $DURATION"
  bare=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$base/bench/bare")
  echo "$bare" | sed -n '/Latency Distribution/,/Requests\/sec/p'
  echo "== round $round of $ROUNDS: cached session validation, GET /api/sessions/validate, $CONNECTIONS connections, $DURATION"
  cached=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$base/api/sessions/validate")
  echo "$cached" | sed -n '/Latency Distribution/,/Requests\/sec/p'
  n=$(echo "$cached" | sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p')
  non2xx=$((non2xx + ${n:-0}))
  b=$(echo "$bare" | rps); c=$(echo "$cached" | rps)
  if ! python3 -c "import sys; sys.exit(0 if float('${b:-0}') > 0 and float('${c:-0}') > 0 else 1)"; then
    echo "load: round $round: wrk reported no requests/s (bare '${b}', cached '${c}'); is the service up at $base?" >&2
    exit 1
  fi
  bare_all+=("$b"); cached_all+=("$c")
  ratios+=("$(python3 -c "print(round($c / $b, 3))")")
done
median() { python3 -c "import statistics, sys; print(statistics.median(float(x) for x in sys.argv[1:]))" "$@"; }
bare_rps=$(median "${bare_all[@]}"); cached_rps=$(median "${cached_all[@]}"); ratio=$(median "${ratios[@]}")

# Half of the maximum rate: each connection waits between requests (wrk's delay hook).
half=$(python3 -c "print(max(1.0, $cached_rps / 2))")
delay_ms=$(python3 -c "print(max(0, int($CONNECTIONS * 1000 / $half)))")
cat >> "$lua" <<LUA
function delay() return $delay_ms end
LUA
echo "== cached session validation at about half the maximum rate (~${half%.*} req/s)"
paced=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$PACED_DURATION" --latency -s "$lua" "$base/api/sessions/validate")
echo "$paced" | sed -n '/Latency Distribution/,/Requests\/sec/p'
p99=$(echo "$paced" | sed -n 's/^[[:space:]]*99%[[:space:]]*\(.*\)$/\1/p')

echo
echo "summary ($ROUNDS alternating rounds of $DURATION a route; medians):"
echo "  bare route:             $bare_rps req/s  (rounds: ${bare_all[*]})"
echo "  cached validation:      $cached_rps req/s  (rounds: ${cached_all[*]})"
echo "  ratio:                  $ratio  (rounds: ${ratios[*]}; goal >= 0.5)"
echo "  non-2xx during the run: $non2xx"
echo "  p99 at half the rate:   $p99 (goal < 5 ms)"
