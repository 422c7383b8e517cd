#!/usr/bin/env bash
# The proxy suite (Tests/deploy): Debian's nginx with deploy/nginx.conf on loopback, TLS with a
# certificate made by openssl, HTTP/2 to a Python client (httpx, PyPI, in a virtual environment
# under .build), two `tidings serve` instances in PostgreSQL mode behind it. Logs of the last run
# go to .build/deploy-tests/.
#
#   scripts/deploy-tests.sh [pytest args…]
#
# Uses the cluster in TIDINGS_TEST_DATABASE_URL when set (scripts/test.sh sets it), else starts
# and removes a throwaway one. Needs the debug binary (swift build).
set -euo pipefail
cd "$(dirname "$0")/.."
rm -rf .build/deploy-tests
exec scripts/python-suite.sh deploy "${TIDINGS_DEPLOY_PG_PORT:-55489}" "$@"
