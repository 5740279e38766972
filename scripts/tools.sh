#!/usr/bin/env bash
# OS tools the test suite calls besides Postgres and Redis (installed on Debian/Ubuntu when missing):
#   promtool (package prometheus) checks docs/alerts.yml.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  command -v apt-get >/dev/null 2>&1 || { echo "tools: missing ${need[*]}; install them by hand" >&2; exit 1; }
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "tools: installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
echo "tools: promtool $(promtool --version 2>&1 | head -n 1 | awk '{print $3}')"
