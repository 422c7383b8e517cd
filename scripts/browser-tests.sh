#!/usr/bin/env bash
# The real-browser suite (Tests/browser): Debian's Chromium and chromium-driver, driven headless
# by Selenium (PyPI, in a virtual environment under .build), against `tidings` gateways started on
# loopback in memory and PostgreSQL mode. Screenshots and gateway logs go to
# .build/browser-tests/<test>/.
#
#   scripts/browser-tests.sh [pytest args…]
#
# Uses the cluster in TIDINGS_TEST_DATABASE_URL when set (scripts/test.sh sets it), else starts
# and removes a throwaway one. Needs the debug binary (swift build).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh --browser

VENV=.build/browser-venv
source scripts/python-venv.sh
python_venv "$VENV" Tests/browser/requirements.txt

if [ -z "${TIDINGS_TEST_DATABASE_URL:-}" ]; then
    PG_DIR="$(mktemp -d /tmp/tidings-browser-pg.XXXXXX)"
    PG_PORT="${TIDINGS_BROWSER_PG_PORT:-55479}"
    trap 'scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
    PG_CLUSTER_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT" >/dev/null
    export TIDINGS_TEST_DATABASE_URL="$(scripts/pg-cluster.sh url "$PG_DIR" "$PG_PORT")"
fi

export TIDINGS_BIN="${TIDINGS_BIN:-$(swift build --show-bin-path)/tidings}"
export TIDINGS_BROWSER_OUT="${TIDINGS_BROWSER_OUT:-$(pwd)/.build/browser-tests}"
rm -rf "$TIDINGS_BROWSER_OUT"
mkdir -p "$TIDINGS_BROWSER_OUT"
exec "$VENV/bin/python" -m pytest Tests/browser -p no:cacheprovider "$@"
