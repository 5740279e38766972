#!/usr/bin/env bash
# Runs the example service in one command: local Postgres and Redis (started, and on Debian
# installed, when nothing answers), a database of its own, demo data once, then the service.
#
#   scripts/run.sh                 # http://127.0.0.1:8080
#   BIND_ADDR=127.0.0.1:9000 scripts/run.sh
#
# Any variable of examples/unite-hub/.env.example can be set in the environment first.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/unite/target}"
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/unite_hub}"
export REDIS_URL="${REDIS_URL-redis://127.0.0.1:6379}"
export BIND_ADDR="${BIND_ADDR:-127.0.0.1:8080}"
export LOG_FORMAT="${LOG_FORMAT:-pretty}"
STATE_DIR="${UNITE_STATE_DIR:-$HOME/.local/state/unite}"
mkdir -p "$STATE_DIR"
if [ -z "${ADMIN_TOKEN:-}" ]; then
  # A development token of this machine's own, kept between runs.
  [ -f "$STATE_DIR/admin-token" ] || head -c 24 /dev/urandom | base64 | tr -d '/+=' > "$STATE_DIR/admin-token"
  ADMIN_TOKEN=$(cat "$STATE_DIR/admin-token"); export ADMIN_TOKEN
fi

# The services script reads DATABASE_URL for host and port only; point it at the server.
DATABASE_URL="${DATABASE_URL%/*}/postgres" scripts/services.sh up

# The service's own database.
db="${DATABASE_URL##*/}"; db="${db%%\?*}"
server_url="${DATABASE_URL%/*}/postgres"
if command -v psql >/dev/null 2>&1; then
  if [ "$(psql "$server_url" -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'")" != 1 ]; then
    echo "run: creating database $db"
    psql "$server_url" -qc "CREATE DATABASE \"$db\""
  fi
fi

cargo build --release -p unite-hub --locked
bin="$CARGO_TARGET_DIR/release/unite-hub"

if [ ! -f "$STATE_DIR/seeded-$db" ]; then
  "$bin" seed --users 100 --contacts 50
  touch "$STATE_DIR/seeded-$db"
fi

echo
echo "unite-hub on http://$BIND_ADDR  (admin token: $STATE_DIR/admin-token)"
echo "try:  curl -s http://$BIND_ADDR/api/health"
echo "      curl -s -X POST http://$BIND_ADDR/api/sessions -H 'content-type: application/json' \\"
echo "           -d '{\"email\":\"demo1@example.com\",\"password\":\"demo-password\"}'"
echo
exec "$bin" serve
