#!/usr/bin/env bash
# `make test`: every test suite, the API description's checks (scripts/api-tests.sh), the
# browser suite and a short fuzzing run (scripts/fuzz.sh), with a throwaway PostgreSQL cluster
# that is stopped and removed afterwards whatever the result.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_DIR="${TIDINGS_TEST_PG_DIR:-$(mktemp -d /tmp/tidings-test-pg.XXXXXX)}"
PG_PORT="${TIDINGS_TEST_PG_PORT:-55439}"

cleanup() {
    scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup EXIT

PG_CLUSTER_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT"
export TIDINGS_TEST_DATABASE_URL="$(scripts/pg-cluster.sh url "$PG_DIR" "$PG_PORT")"
export TIDINGS_TEST_PG_PORT_BASE=$((PG_PORT + 1))

swift build --build-tests
LOG="${TIDINGS_TEST_LOG_FILE:-/tmp/tidings-test.log}"
# Every answer the tests' HTTP clients receive, checked against openapi/tidings.yaml below.
export TIDINGS_TEST_EXCHANGES="$(pwd)/.build/test-exchanges.jsonl"
rm -f "$TIDINGS_TEST_EXCHANGES"
status=0
# Four passes, so that on two cores the suites that measure time (group commit, the bench
# tool, shutdown) do not share the machine with everything else: the core and PostgreSQL
# suites, then the server suites, then the load tests (2,000 streams to a spawned gateway, 500
# slow connections) and the database failures (a private cluster stopped for
# TIDINGS_TEST_DB_OUTAGE_SECONDS, default 30, killed and crashed under steady publishing), then
# the two publish paths compared on generated requests split at every byte (its busy clients
# would starve the load tests' own).
HEAVY="DrainProcessTests|ConnectionTimeoutTests|PostgresFailureTests"
COMPARE="PublishPathsAgreeTests"
if [ "$#" -eq 0 ]; then
    : >"$LOG"
    swift test --skip-build --filter "TidingsCoreTests|TidingsPostgresTests" >>"$LOG" 2>&1 || status=$?
    swift test --skip-build --skip "TidingsCoreTests|TidingsPostgresTests|$HEAVY|$COMPARE" >>"$LOG" 2>&1 || status=$?
    swift test --skip-build --filter "$HEAVY" >>"$LOG" 2>&1 || status=$?
    swift test --skip-build --filter "$COMPARE" >>"$LOG" 2>&1 || status=$?
else
    swift test --skip-build "$@" >"$LOG" 2>&1 || status=$?
fi
if [ "$status" -ne 0 ]; then
    echo "---- failures (full log: $LOG) ----"
    grep -E -B2 -A8 "✘|error:|Expectation failed|Fatal error|Test Case .* failed" "$LOG" | head -n 400 || tail -n 100 "$LOG"
fi
grep -E "Test run with|Executed [0-9]+ tests" "$LOG" | tail -n 8

# The API description: linted, every recorded answer checked against it, and a bounded
# schemathesis run (SCHEMATHESIS_SECONDS, default 60) against a live memory-mode gateway.
api_status=0
scripts/api-tests.sh "$TIDINGS_TEST_EXCHANGES" || api_status=$?
[ "$status" -ne 0 ] || status=$api_status

# The real-browser suite, against the same cluster (each test makes its own database).
browser_status=0
scripts/browser-tests.sh -q || browser_status=$?
[ "$status" -ne 0 ] || status=$browser_status

# TLS and HTTP/2 at nginx in front of two instances (deploy/nginx.conf), same cluster.
deploy_status=0
scripts/deploy-tests.sh -q || deploy_status=$?
[ "$status" -ne 0 ] || status=$deploy_status
# A one-minute soak (`make soak` runs ten): churn, slow clients, resumes and steady publishing
# against a spawned gateway; memory and descriptors must come back, every stream hold every
# event once, in order.
soak_status=0
SOAK_SECONDS="${SOAK_SECONDS:-60}" SOAK_WARMUP="${SOAK_WARMUP:-20}" scripts/soak.sh >"${LOG%.log}-soak.log" 2>&1 \
    || soak_status=$?
if [ "$soak_status" -ne 0 ]; then echo "---- soak failed (log: ${LOG%.log}-soak.log) ----"; tail -n 40 "${LOG%.log}-soak.log"; fi
grep -E "^soak|passed|failed" "${LOG%.log}-soak.log" | tail -n 3 || true
[ "$status" -ne 0 ] || status=$soak_status

# The parsers under libFuzzer and AddressSanitizer (Fuzz/), briefly: FUZZ_SECONDS per target,
# 10 here (`make fuzz` runs 60). A crash or a broken property fails the run.
fuzz_status=0
FUZZ_SECONDS="${FUZZ_SECONDS:-10}" scripts/fuzz.sh || fuzz_status=$?
[ "$status" -ne 0 ] || status=$fuzz_status
exit "$status"
