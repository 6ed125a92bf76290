#!/usr/bin/env bash
# One entry point for a fresh machine:
#   ./dev.sh demo   set everything up and run the end-to-end demo on embedded defaults (no servers)
#   ./dev.sh test   set everything up, start Redis/PostgreSQL if they are not running, install
#                   chromium if missing (browser test of the reports), run every check
#                   (ruff, mypy, lint-imports, pytest)
set -euo pipefail
cd "$(dirname "$0")"

VENV=.venv
PY="$VENV/bin/python"

setup() {
  if [ ! -x "$PY" ]; then
    python3 -m venv "$VENV"
  fi
  "$PY" -m pip install -q --upgrade pip
  # Ax needs torch; its CPU wheel first, or pip resolves the CUDA build and several GB with it.
  "$PY" -m pip install -q "torch==2.13.0"
  "$PY" -m pip install -q -e ".[$1]"
  if [ "$1" = dev ]; then  # the reference estimators; its pinned dependencies do not build
    "$PY" -m pip install -q --no-deps "obp==0.4.1"
  fi
}

listening() {  # host port
  "$PY" - "$1" "$2" <<'PYEOF'
import socket, sys
try:
    socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1).close()
except OSError:
    sys.exit(1)
PYEOF
}

apt_install() {
  if command -v apt-get >/dev/null; then
    [ -n "${APT_UPDATED:-}" ] || { apt-get update -qq; APT_UPDATED=1; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
  else
    echo "please install: $*" >&2; exit 1
  fi
}

ensure_redis() {
  listening 127.0.0.1 6379 && return
  command -v redis-server >/dev/null || apt_install redis-server
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  for _ in $(seq 50); do listening 127.0.0.1 6379 && return; sleep 0.1; done
  echo "Redis did not start" >&2; exit 1
}

ensure_postgres() {
  listening 127.0.0.1 5432 && return
  command -v pg_ctlcluster >/dev/null || apt_install postgresql
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start
  for _ in $(seq 100); do listening 127.0.0.1 5432 && break; sleep 0.1; done
  su postgres -c "psql -tc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb test" || true
}

ensure_node_client() {  # the generated TypeScript client's test compiles it with tsc and runs it on Node
  command -v npm >/dev/null || apt_install nodejs npm
  (cd clients/typescript && npm ci --no-audit --no-fund --silent)
}

ensure_chromium() {  # the experiment report's browser test drives Debian's chromium with Playwright
  command -v chromium >/dev/null || apt_install chromium
}

case "${1:-}" in
  demo)
    setup all
    "$VENV/bin/closedloop" demo "${@:2}"
    ;;
  test)
    setup dev
    ensure_redis
    ensure_postgres
    ensure_chromium
    ensure_node_client
    "$VENV/bin/ruff" check .
    "$VENV/bin/mypy"
    "$VENV/bin/lint-imports"  # the layering contracts of pyproject.toml
    set +e
    "$VENV/bin/python" -m pytest "${@:2}"
    status=$?
    set -e
    # pytest exits 5 when it collected no tests: that is a failure of the suite, say so.
    [ "$status" -eq 5 ] && echo "pytest collected no tests" >&2
    exit "$status"
    ;;
  *)
    echo "usage: ./dev.sh demo | test [pytest args]" >&2; exit 2
    ;;
esac
