#!/usr/bin/env bash
# `make test-sanitize`: the Swift test suites built and run under ThreadSanitizer and then
# AddressSanitizer, each in its own build folder (.build-tsan, .build-asan), with a throwaway
# PostgreSQL cluster as `make test` uses. Prints how long each build and run took.
#
#   SANITIZERS            which, in order (default "thread address")
#   SANITIZE_PG_PORT      the cluster's port (default 55469; the tests' own clusters use the
#                         ports above it)
#   Extra arguments go to `swift test` (e.g. --filter EventBusTests).
#
# Left out (see README, "Sanitizers"): the load pass of `make test` (DrainProcessTests,
# ConnectionTimeoutTests: thousands of connections whose timing a 5–15× slower build cannot
# meet) and the bench tool's suites, which time a spawned gateway.
set -euo pipefail
cd "$(dirname "$0")/.."

SANITIZERS="${SANITIZERS:-thread address}"
PG_DIR="$(mktemp -d /tmp/tidings-sanitize-pg.XXXXXX)"
PG_PORT="${SANITIZE_PG_PORT:-55469}"
SKIP="DrainProcessTests|ConnectionTimeoutTests|BenchCommandTests"

cleanup() {
    scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap cleanup EXIT

PG_CLUSTER_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
    scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT" >/dev/null
export TIDINGS_TEST_DATABASE_URL="$(scripts/pg-cluster.sh url "$PG_DIR" "$PG_PORT")"
export TIDINGS_TEST_PG_PORT_BASE="${TIDINGS_TEST_PG_PORT_BASE:-$((PG_PORT + 1))}"
SUPPRESSIONS="$(pwd)/scripts/sanitizers"
# Reports go to the log; scripts/tsan-triage.py then fails the run on any report that is not
# the known Mutex false positive (so TSan's own exit code, 66 on any report, is turned off).
export TSAN_OPTIONS="halt_on_error=0 exitcode=0 second_deadlock_stack=1 suppressions=$SUPPRESSIONS/tsan.supp ${TSAN_OPTIONS:-}"
export ASAN_OPTIONS="detect_leaks=0 ${ASAN_OPTIONS:-}"

status=0
summary=()
for sanitizer in $SANITIZERS; do
    case "$sanitizer" in
        thread) dir=.build-tsan ;;
        address) dir=.build-asan ;;
        *) echo "test-sanitize.sh: unknown sanitizer $sanitizer (thread or address)" >&2; exit 64 ;;
    esac
    log="$dir/sanitize-test.log"
    started=$(date +%s)
    swift build --build-tests --sanitize="$sanitizer" --scratch-path "$dir"
    built=$(date +%s)
    run_status=0
    swift test --skip-build --sanitize="$sanitizer" --scratch-path "$dir" --skip "$SKIP" "$@" >"$log" 2>&1 || run_status=$?
    finished=$(date +%s)
    reports=$(grep -c -E "WARNING: ThreadSanitizer|ERROR: AddressSanitizer" "$log" || true)
    if [ "$sanitizer" = thread ]; then
        scripts/tsan-triage.py "$log" || run_status=1
    fi
    if [ "$run_status" -ne 0 ]; then
        status=$run_status
        echo "---- $sanitizer: failures and reports (full log: $log) ----"
        grep -E -A30 "WARNING: ThreadSanitizer|ERROR: AddressSanitizer" "$log" | head -n 300 || true
        grep -E -B2 -A8 "✘|Expectation failed|Fatal error" "$log" | head -n 200 || true
    fi
    summary+=("$sanitizer: build $((built - started)) s, tests $((finished - built)) s, exit $run_status, $reports sanitizer reports; $(grep -E "Test run with|Executed [0-9]+ tests" "$log" | tail -n 2 | tr '\n' ' ')")
done
printf '%s\n' "${summary[@]}"
exit "$status"
