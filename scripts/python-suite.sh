#!/usr/bin/env bash
# Runs one Python test suite, Tests/<suite>, with pytest: installs what it needs from Debian
# (`scripts/install-deps.sh --<suite>`), keeps its virtual environment in .build/<suite>-venv
# (made anew when Tests/<suite>/requirements.txt changes), uses the cluster in
# TIDINGS_TEST_DATABASE_URL when set (scripts/test.sh sets it), else starts and removes a
# throwaway one on PG_PORT, and points TIDINGS_BIN at the debug binary (swift build).
#
#   scripts/python-suite.sh SUITE PG_PORT [pytest args…]
set -euo pipefail
cd "$(dirname "$0")/.."
SUITE="$1"
PG_PORT="$2"
shift 2

scripts/install-deps.sh "--$SUITE"

VENV=".build/$SUITE-venv"
source scripts/python-venv.sh
python_venv "$VENV" "Tests/$SUITE/requirements.txt"

if [ -z "${TIDINGS_TEST_DATABASE_URL:-}" ]; then
    PG_DIR="$(mktemp -d "/tmp/tidings-$SUITE-pg.XXXXXX")"
    trap 'scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
    PG_CLUSTER_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
        scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT" >/dev/null
    export TIDINGS_TEST_DATABASE_URL="$(scripts/pg-cluster.sh url "$PG_DIR" "$PG_PORT")"
fi

export TIDINGS_BIN="${TIDINGS_BIN:-$(swift build --show-bin-path)/tidings}"
"$VENV/bin/python" -m pytest "Tests/$SUITE" -p no:cacheprovider "$@"
