# Sourced by scripts/load.sh and scripts/soak.sh: starts the example service on a free loopback
# port for a load generator, and signs a user in.
#
#   start_hub_for_load <name>
#
# Installs wrk when missing (OS packages), brings the local services up, creates the load
# database, runs UNITE_HUB_BIN or a fresh release build, seeds demo data, serves, and signs in an
# enterprise user whose quota an admin override lifts (the limiter is still consulted on every
# request). Sets: base (the service's URL), pid, log (its output), token, lua (a wrk script
# sending the bearer token). The service and the temporary files go away when the caller exits.
start_hub_for_load() {
  local name="$1"
  if ! command -v wrk >/dev/null 2>&1; then
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq && $sudo apt-get install -y -qq wrk >/dev/null
  fi
  scripts/services.sh up >/dev/null

  export DATABASE_URL="${LOAD_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/unite_hub_load}"
  export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
  export ADMIN_TOKEN="$name-test-admin-token-$RANDOM$RANDOM"
  export CACHE_NAMESPACE="unite-hub-$name:"
  export LOG_FORMAT=json RUST_LOG=warn WARM_ON_START=false
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  export BIND_ADDR="127.0.0.1:$port"
  base="http://$BIND_ADDR"

  local db="${DATABASE_URL##*/}"
  psql "${DATABASE_URL%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql "${DATABASE_URL%/*}/postgres" -qc "CREATE DATABASE \"$db\""

  # UNITE_HUB_BIN runs a binary built otherwise (e.g. with frame pointers, for a profiler).
  local bin="${UNITE_HUB_BIN:-}"
  if [ -z "$bin" ]; then
    cargo build --release -p unite-hub --locked -q
    bin="$CARGO_TARGET_DIR/release/unite-hub"
  fi
  "$bin" seed --users 3 --contacts 10 >/dev/null
  log=$(mktemp)
  lua=""
  "$bin" serve > "$log" 2>&1 &
  pid=$!
  trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true; rm -f "$log" "$lua"' EXIT
  for _ in $(seq 100); do curl -sf "$base/api/health" >/dev/null && break; sleep 0.1; done

  token=$(curl -sf -X POST "$base/api/sessions" -H 'content-type: application/json' \
    -d '{"email":"demo3@example.com","password":"demo-password"}' | sed 's/.*"token":"\([^"]*\)".*/\1/')
  local user_id
  user_id=$(curl -sf "$base/api/sessions/validate" -H "authorization: Bearer $token" | sed 's/.*"user_id":\([0-9]*\).*/\1/')
  curl -sf -X PUT "$base/api/admin/ratelimit/overrides" -H "authorization: Bearer $ADMIN_TOKEN" \
    -H 'content-type: application/json' \
    -d "{\"subject\":\"user:$user_id\",\"rule\":{\"kind\":\"quota\",\"default\":{\"limit\":10000000,\"window_s\":60}}}" >/dev/null \
    || { echo "$name: could not set the quota override" >&2; exit 1; }

  lua=$(mktemp)
  cat > "$lua" <<LUA
wrk.headers["authorization"] = "Bearer $token"
LUA
}
