#!/usr/bin/env bash
# Load test of the example service, on loopback only, bounded in time:
#   1. the cached session validation (GET /api/sessions/validate, warm cache) and a bare axum
#      route with no middleware (GET /bench/bare) in the same binary, each at full speed;
#   2. the cached route again at half of its maximum rate, for its p99.
# Prints requests/s and latency percentiles. Needs wrk (installed from the OS packages when
# missing) and the local services (started by scripts/services.sh).
#
#   scripts/load.sh               # 10 s a run, 32 connections, 2 wrk threads
#   DURATION=30s CONNECTIONS=64 scripts/load.sh
#   REDIS_URL= scripts/load.sh    # without Redis: in-memory cache, in-process limits
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
DURATION="${DURATION:-10s}"
CONNECTIONS="${CONNECTIONS:-32}"
THREADS="${THREADS:-2}"

if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk >/dev/null
fi
scripts/services.sh up >/dev/null

export DATABASE_URL="${LOAD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/unite_hub_load}"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export ADMIN_TOKEN="load-test-admin-token-$RANDOM$RANDOM"
export CACHE_NAMESPACE="unite-hub-load:"
export LOG_FORMAT=json RUST_LOG=warn WARM_ON_START=false
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export BIND_ADDR="127.0.0.1:$port"
base="http://$BIND_ADDR"

db="${DATABASE_URL##*/}"
psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
  || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE \"$db\""

# UNITE_HUB_BIN runs a binary built otherwise (e.g. with frame pointers, for a profiler).
bin="${UNITE_HUB_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -p unite-hub --locked -q
  bin="$CARGO_TARGET_DIR/release/unite-hub"
fi
"$bin" seed --users 3 --contacts 10 >/dev/null
log=$(mktemp)
"$bin" serve > "$log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do curl -sf "$base/api/health" >/dev/null && break; sleep 0.1; done

# An enterprise user (10,000 a minute) and a quota override so the limiter does not cap the run:
# the limiter is still consulted on every request.
token=$(curl -sf -X POST "$base/api/sessions" -H 'content-type: application/json' \
  -d '{"email":"demo3@example.com","password":"demo-password"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
user_id=$(curl -sf "$base/api/sessions/validate" -H "authorization: Bearer $token" | sed 's/.*"user_id":\([0-9]*\).*/\1/')
curl -sf -X PUT "$base/api/admin/ratelimit/overrides" -H "authorization: Bearer $ADMIN_TOKEN" \
  -H 'content-type: application/json' \
  -d "{\"subject\":\"user:$user_id\",\"rule\":{\"kind\":\"quota\",\"default\":{\"limit\":10000000,\"window_s\":60}}}" >/dev/null \
  || { echo "load: could not set the quota override" >&2; exit 1; }

lua=$(mktemp); cat > "$lua" <<LUA
wrk.headers["authorization"] = "Bearer $token"
LUA
rps() { sed -n 's/^Requests\/sec:[[:space:]]*\([0-9.]*\).*/\1/p'; }

echo "== bare route (no middleware): GET /bench/bare, $CONNECTIONS connections, $DURATION"
bare=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$base/bench/bare")
echo "$bare" | sed -n '/Latency Distribution/,/Requests\/sec/p'
echo "== cached session validation: GET /api/sessions/validate, $CONNECTIONS connections, $DURATION"
cached=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$base/api/sessions/validate")
echo "$cached" | sed -n '/Latency Distribution/,/Requests\/sec/p'
non2xx=$(echo "$cached" | sed -n 's/.*Non-2xx or 3xx responses: \([0-9]*\).*/\1/p')
bare_rps=$(echo "$bare" | rps); cached_rps=$(echo "$cached" | rps)

# Half of the maximum rate: each connection waits between requests (wrk's delay hook).
half=$(python3 -c "print(max(1.0, $cached_rps / 2))")
delay_ms=$(python3 -c "print(max(0, int($CONNECTIONS * 1000 / $half)))")
cat >> "$lua" <<LUA
function delay() return $delay_ms end
LUA
echo "== cached session validation at about half the maximum rate (~${half%.*} req/s)"
paced=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$lua" "$base/api/sessions/validate")
echo "$paced" | sed -n '/Latency Distribution/,/Requests\/sec/p'
p99=$(echo "$paced" | sed -n 's/^[[:space:]]*99%[[:space:]]*\(.*\)$/\1/p')
rm -f "$lua"

echo
echo "summary:"
echo "  bare route:             $bare_rps req/s"
echo "  cached validation:      $cached_rps req/s  (ratio $(python3 -c "print(round($cached_rps / $bare_rps, 3))"); goal >= 0.5)"
echo "  non-2xx during the run: ${non2xx:-0}"
echo "  p99 at half the rate:   $p99 (goal < 5 ms)"
