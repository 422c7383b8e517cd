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

export TIDINGS_BROWSER_OUT="${TIDINGS_BROWSER_OUT:-$(pwd)/.build/browser-tests}"
rm -rf "$TIDINGS_BROWSER_OUT"
mkdir -p "$TIDINGS_BROWSER_OUT"
exec scripts/python-suite.sh browser "${TIDINGS_BROWSER_PG_PORT:-55479}" "$@"
