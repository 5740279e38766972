#!/usr/bin/env bash
# Local Postgres and Redis for Unite's tests, examples and benchmarks.
#
#   scripts/services.sh up      start what does not answer (installing it first on Debian/Ubuntu)
#   scripts/services.sh status  say what answers at DATABASE_URL and REDIS_URL
#   scripts/services.sh down    stop what this script started (never a server it found running)
#
# It is idempotent: a server that already answers is left alone. Servers it starts listen on
# loopback only and keep their state under $UNITE_STATE_DIR (default ~/.local/state/unite).
set -euo pipefail

DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
STATE_DIR="${UNITE_STATE_DIR:-$HOME/.local/state/unite}"

say() { printf 'services: %s\n' "$*"; }
die() { printf 'services: error: %s\n' "$*" >&2; exit 1; }

# host and port from a URL: scheme://[user[:pass]@]host[:port][/...]
url_host() { local a="${1#*://}"; a="${a%%/*}"; a="${a%%\?*}"; a="${a##*@}"; a="${a%:*}"; echo "${a:-127.0.0.1}"; }
url_port() {
  local a="${1#*://}"; a="${a%%/*}"; a="${a%%\?*}"; a="${a##*@}"
  case "$a" in *:*) echo "${a##*:}" ;; *) echo "$2" ;; esac
}
PG_HOST=$(url_host "$DATABASE_URL"); PG_PORT=$(url_port "$DATABASE_URL" 5432)
REDIS_HOST=$(url_host "$REDIS_URL"); REDIS_PORT=$(url_port "$REDIS_URL" 6379)

is_loopback() { case "$1" in 127.*|localhost|::1|\[::1\]) return 0 ;; *) return 1 ;; esac; }

# Does something answer? A plain TCP probe, then the protocol when the client is installed.
tcp_open() { timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null; }
pg_up() {
  if command -v pg_isready >/dev/null 2>&1; then pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2
  else tcp_open "$PG_HOST" "$PG_PORT"; fi
}
redis_up() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(timeout 3 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ]
  else tcp_open "$REDIS_HOST" "$REDIS_PORT"; fi
}

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "$* missing and this is not a Debian/Ubuntu system: install $* by hand"
  say "installing $* (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if [ ! -f "$STATE_DIR/.apt-updated" ]; then
    $SUDO apt-get update -qq
    mkdir -p "$STATE_DIR"; touch "$STATE_DIR/.apt-updated"
  fi
  $SUDO apt-get install -y -qq "$@" >/dev/null
}

pg_bindir() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then pg_config --bindir; return; fi
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

start_postgres() {
  is_loopback "$PG_HOST" || die "Postgres at $PG_HOST:$PG_PORT does not answer, and it is not a local address: start it there"
  local bin; bin=$(pg_bindir)
  if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then apt_install postgresql postgresql-contrib; bin=$(pg_bindir); fi
  [ -x "$bin/initdb" ] || die "no PostgreSQL server binaries found after install"
  # A Debian cluster on the standard port: start it the Debian way.
  if [ "$PG_PORT" = 5432 ] && command -v pg_ctlcluster >/dev/null 2>&1 && ls /etc/postgresql/*/main >/dev/null 2>&1; then
    local ver; ver=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting the system PostgreSQL $ver cluster"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
    # A fresh Debian cluster asks for passwords over TCP: trust loopback, as the tests expect.
    if ! wait_for pg_up 30; then die "PostgreSQL $ver did not come up"; fi
    ensure_trust "$ver"
    return
  fi
  # Otherwise a cluster of our own under the state folder, run as a non-root user.
  local data="$STATE_DIR/postgres" run=() owner
  owner=$(id -un)
  if [ "$(id -u)" -eq 0 ]; then owner=postgres; run=(runuser -u postgres --); fi
  mkdir -p "$data"; chown "$owner" "$data" "$STATE_DIR" 2>/dev/null || true
  if [ ! -f "$data/PG_VERSION" ]; then
    say "initialising a PostgreSQL cluster in $data"
    "${run[@]}" "$bin/initdb" -D "$data" -U postgres -A trust -E UTF8 >/dev/null
  fi
  say "starting PostgreSQL on 127.0.0.1:$PG_PORT"
  "${run[@]}" "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -o "-p $PG_PORT -c listen_addresses=127.0.0.1 -k $data" start >/dev/null
  echo "$data" > "$STATE_DIR/postgres.started"
}

ensure_trust() {
  local hba="/etc/postgresql/$1/main/pg_hba.conf"
  if [ -f "$hba" ] && ! grep -qE '^host\s+all\s+all\s+127\.0\.0\.1/32\s+trust' "$hba"; then
    say "allowing trust auth on loopback in $hba"
    $SUDO sed -i '0,/^host/s//host all all 127.0.0.1\/32 trust\nhost all all ::1\/128 trust\nhost/' "$hba"
    $SUDO pg_ctlcluster --skip-systemctl-redirect "$1" main reload || true
  fi
}

start_redis() {
  is_loopback "$REDIS_HOST" || die "Redis at $REDIS_HOST:$REDIS_PORT does not answer, and it is not a local address: start it there"
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  mkdir -p "$STATE_DIR/redis"
  say "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --save "" --appendonly no \
    --dir "$STATE_DIR/redis" --logfile "$STATE_DIR/redis/redis.log" --pidfile "$STATE_DIR/redis/redis.pid"
  echo "$REDIS_PORT" > "$STATE_DIR/redis.started"
}

wait_for() { local i; for ((i = 0; i < $2 * 10; i++)); do "$1" && return 0; sleep 0.1; done; return 1; }

up() {
  mkdir -p "$STATE_DIR"
  if pg_up; then say "Postgres answers at $PG_HOST:$PG_PORT"
  else start_postgres; wait_for pg_up 30 || die "Postgres did not answer at $PG_HOST:$PG_PORT after start"; say "Postgres started at $PG_HOST:$PG_PORT"; fi
  if redis_up; then say "Redis answers at $REDIS_HOST:$REDIS_PORT"
  else start_redis; wait_for redis_up 30 || die "Redis did not answer at $REDIS_HOST:$REDIS_PORT after start"; say "Redis started at $REDIS_HOST:$REDIS_PORT"; fi
  # The OS binaries the test kit starts extra servers from.
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  [ -n "$(pg_bindir)" ] || apt_install postgresql
}

status() {
  local rc=0
  if pg_up; then say "Postgres: up at $PG_HOST:$PG_PORT"; else say "Postgres: DOWN at $PG_HOST:$PG_PORT"; rc=1; fi
  if redis_up; then say "Redis: up at $REDIS_HOST:$REDIS_PORT"; else say "Redis: DOWN at $REDIS_HOST:$REDIS_PORT"; rc=1; fi
  return $rc
}

down() {
  if [ -f "$STATE_DIR/redis.started" ]; then
    say "stopping the Redis this script started"
    redis-cli -p "$(cat "$STATE_DIR/redis.started")" shutdown nosave >/dev/null 2>&1 || true
    rm -f "$STATE_DIR/redis.started"
  fi
  if [ -f "$STATE_DIR/postgres.started" ]; then
    local data run=(); data=$(cat "$STATE_DIR/postgres.started")
    [ "$(id -u)" -eq 0 ] && run=(runuser -u postgres --)
    say "stopping the PostgreSQL this script started"
    "${run[@]}" "$(pg_bindir)/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
    rm -f "$STATE_DIR/postgres.started"
  fi
  say "servers this script did not start are left running"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
