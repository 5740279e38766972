#!/usr/bin/env bash
# Soak test of the example service (issue #11): 1,000 concurrent connections for 60 s against
# the cached session validation (GET /api/sessions/validate), on loopback only. The goal is
# 0 errors: no socket error, no timeout, no non-2xx answer. Not part of `cargo test` (it takes a
# minute and a release build); run it by hand:
#
#   scripts/soak.sh                                  # 1,000 connections, 60 s, 2 wrk threads
#   CONNECTIONS=200 DURATION=20s scripts/soak.sh
#   UNITE_HUB_BIN=/path/to/release/unite-hub scripts/soak.sh   # skip the release build
#
# Needs wrk (installed from the OS packages when missing) and the local services (started by
# scripts/services.sh). Exits non-zero when any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
DURATION="${DURATION:-60s}"
CONNECTIONS="${CONNECTIONS:-1000}"
THREADS="${THREADS:-2}"
# 1,000 client sockets and 1,000 server sockets in one shell's children: 65536 descriptors,
# or the hard limit when it is lower (a container's); refuse to run with too few.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((CONNECTIONS + 1024)) ]; then
  echo "soak: open-file limit $(ulimit -n) is too low for $CONNECTIONS connections" >&2
  exit 1
fi

# shellcheck source=scripts/lib/hub-under-load.sh
. scripts/lib/hub-under-load.sh
start_hub_for_load soak

echo "== soak: GET /api/sessions/validate, $CONNECTIONS connections, $DURATION, $THREADS wrk threads"
# wrk's own timeout (2 s by default) counts a slow answer as an error: 10 s bounds hanging only.
out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --timeout 10s --latency -s "$lua" "$base/api/sessions/validate")
echo "$out"
non2xx=$(echo "$out" | sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p')
socket=$(echo "$out" | sed -n 's/.*Socket errors: \(.*\)$/\1/p')
requests=$(echo "$out" | sed -n 's/^[[:space:]]*\([0-9]*\) requests in.*/\1/p')
kill -0 "$pid" 2>/dev/null || { echo "soak: the service died; log:" >&2; tail -20 "$log" >&2; exit 1; }

echo
echo "summary:"
echo "  requests:        ${requests:-?}"
echo "  non-2xx:         ${non2xx:-0}"
echo "  socket errors:   ${socket:-none}"
if [ -n "$non2xx" ] && [ "$non2xx" != 0 ] || [ -n "$socket" ]; then
  echo "soak: FAILED (goal: 0 errors)" >&2
  exit 1
fi
echo "soak: ok (0 errors)"
