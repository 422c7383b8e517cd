#!/usr/bin/env bash
# What `make bench` runs: the micro-benchmarks with their threshold check, then the load
# scenarios of issue 4 against Tidings and against the C floor (Benchmarks/reference/floor.c),
# server pinned to one core and load generator to the other, each figure the median of --runs
# runs. Writes Benchmarks/results/<date>.md and Benchmarks/results/latest.md.
#
# Usage: scripts/bench.sh [options]
#   --runs N            runs per scenario and server (default 3)
#   --scenarios LIST    comma-separated subset of: light,overload,fanout10k,users,idle,replay,
#                       durablereplay,durable,durable1 (default: all)
#   --no-durable        skip the PostgreSQL scenarios (durablereplay: replay from the database;
#                       durable: 16 publishers, batches of 100; durable1: one publisher, one
#                       event per request)
#   --duration D        measurement window of each run (default 10s)
#   --quick             1 run, 5s windows: a smoke test, not a measurement
#   --no-micro          skip the package-benchmark suites
#   --no-load           skip the load scenarios
#   --no-floor          skip the C floor reference runs
#   --update-thresholds rewrite Benchmarks/Thresholds from this machine instead of checking
#   --server-cpu N / --load-cpu N   cores to pin to (default 0 and 1)
# Environment: BENCH_DATABASE_URL  the database of the durable scenarios; without it a
#              throwaway cluster (fsync on, as in production) is started on port
#              BENCH_PG_PORT (default 55449) and removed afterwards.
# Exit status: 0 when every step ran and no micro-benchmark regressed past its threshold.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=3
DURATION=10s
SCENARIOS=light,overload,fanout10k,users,idle,replay,durablereplay,durable,durable1
DURABLE=1
MICRO=1
LOAD=1
FLOOR=1
UPDATE_THRESHOLDS=0
SERVER_CPU=0
LOAD_CPU=1

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs) RUNS=$2; shift 2 ;;
        --scenarios) SCENARIOS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --quick) RUNS=1; DURATION=5s; shift ;;
        --no-micro) MICRO=0; shift ;;
        --no-load) LOAD=0; shift ;;
        --no-floor) FLOOR=0; shift ;;
        --no-durable) DURABLE=0; shift ;;
        --update-thresholds) UPDATE_THRESHOLDS=1; shift ;;
        --server-cpu) SERVER_CPU=$2; shift 2 ;;
        --load-cpu) LOAD_CPU=$2; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 64 ;;
    esac
done
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --runs must be a positive integer" >&2; exit 64; }
if [[ $DURABLE == 0 ]]; then SCENARIOS=$(tr ',' '\n' <<<"$SCENARIOS" | grep -v '^durable' | paste -sd, -); fi

log() { printf '\n== %s\n' "$*" >&2; }
STATUS=0
LOADAVG_START=$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown)
STAMP=$(date -u +%Y-%m-%dT%H%M%SZ)
DAY=$(date -u +%Y-%m-%d)
RAW="$ROOT/Benchmarks/.build/bench-results/$STAMP"
mkdir -p "$RAW" "$ROOT/Benchmarks/results"

# Pinning needs two cores and taskset; without them the figures are still produced, unpinned.
PIN_SERVER=(--server-cpu "$SERVER_CPU")
PIN_LOAD=(--load-cpu "$LOAD_CPU")
if ! command -v taskset >/dev/null || [[ $(nproc) -lt 2 ]]; then
    echo "bench.sh: taskset or a second core is missing: running unpinned" >&2
    PIN_SERVER=(); PIN_LOAD=()
fi

log "building tidings (release)"
swift build -c release --product tidings >&2
TIDINGS="$ROOT/.build/release/tidings"

MICRO_RESULT="not run"
if [[ $MICRO == 1 ]]; then
    log "micro-benchmarks (package-benchmark, Benchmarks/)"
    pushd Benchmarks >/dev/null
    if [[ $UPDATE_THRESHOLDS == 1 ]]; then
        swift package --allow-writing-to-package-directory benchmark thresholds update --no-progress >&2
        MICRO_RESULT="thresholds updated from this run"
    else
        # Run once into a baseline, check it against Thresholds/, and keep its table for the report.
        swift package --allow-writing-to-package-directory benchmark baseline update bench-sh --no-progress >&2
        set +e
        swift package benchmark thresholds check bench-sh --no-progress >"$RAW/micro.txt" 2>&1
        rc=$?
        set -e
        grep -v '^\[' "$RAW/micro.txt" | grep -v -E '^(Build|Building|Warning|Note)' >&2 || true
        if [[ $rc == 0 ]]; then
            MICRO_RESULT="within thresholds"
        elif grep -q -i 'regression' "$RAW/micro.txt"; then
            MICRO_RESULT="**REGRESSION** past Benchmarks/Thresholds (see below)"
            STATUS=1
        elif grep -q -i 'improvement' "$RAW/micro.txt"; then
            MICRO_RESULT="within thresholds, with improvements (consider scripts/bench.sh --update-thresholds)"
        else
            MICRO_RESULT="failed to run (exit $rc)"
            STATUS=1
        fi
        swift package benchmark baseline read bench-sh --format markdown --path stdout --no-progress 2>/dev/null |
            sed -n '/^## Baseline/,$p' >"$RAW/micro.md" || true
    fi
    popd >/dev/null
fi

if [[ $LOAD == 1 ]]; then
    FLOOR_BIN="$ROOT/Benchmarks/.build/floor"
    if [[ $FLOOR == 1 ]]; then
        log "building the C floor (cc -O2 Benchmarks/reference/floor.c)"
        mkdir -p "$(dirname "$FLOOR_BIN")"
        cc -O2 -o "$FLOOR_BIN" Benchmarks/reference/floor.c
    fi

    # name | servers | arguments
    scenario_args() {
        case "$1" in
            light) echo "fanout --connections 2000 --rate 20" ;;
            overload) echo "fanout --connections 2000 --rate 200 --publish-connections 16" ;;
            fanout10k) echo "fanout --connections 10000 --rate 200 --ramp 4000 --publish-connections 16" ;;
            users) echo "users --connections 2000 --publish-connections 16 --pipeline 4" ;;
            idle) echo "idle --connections 10000 --ramp 4000 --duration 3s" ;;
            replay|durablereplay) echo "replay --missed 999 --iterations 20 --background 99000" ;;
            durable) echo "users --connections 200 --publish-connections 16 --batch 100" ;;
            durable1) echo "users --connections 200 --publish-connections 1 --pipeline 1" ;;
            *) return 1 ;;
        esac
    }
    floor_supported() { [[ "$1" != replay && "$1" != durable* ]]; }

    run_one() { # scenario server run
        local scenario=$1 server=$2 run=$3 out="$RAW/$1-$2-$3.json"
        local args
        args=$(scenario_args "$scenario")
        local spawn=(--spawn)
        [[ $server == floor ]] && spawn=(--spawn-command "$FLOOR_BIN {port}" --label floor)
        local extra=()
        [[ $scenario == durable* ]] && extra=(--server-arg=--database-url="$BENCH_DATABASE_URL")
        case "$scenario" in idle|*replay) ;; *) extra+=(--duration "$DURATION") ;; esac
        printf '   %-10s %-8s run %d: tidings bench %s\n' "$scenario" "$server" "$run" "$args" >&2
        # shellcheck disable=SC2086
        if ! timeout 600 "$TIDINGS" bench $args "${spawn[@]}" "${PIN_SERVER[@]}" "${PIN_LOAD[@]}" \
            "${extra[@]}" --quiet --json >"$out" 2>"$RAW/$1-$2-$3.err"; then
            echo "   failed: $(tail -3 "$RAW/$1-$2-$3.err")" >&2
            rm -f "$out"
            STATUS=1
        fi
    }

    IFS=',' read -r -a LIST <<<"$SCENARIOS"
    if [[ ",$SCENARIOS," == *,durable* ]]; then
        if [[ -z "${BENCH_DATABASE_URL:-}" ]]; then
            BENCH_PG_DIR=$(mktemp -d /tmp/tidings-bench-pg.XXXXXX)
            trap 'scripts/pg-cluster.sh stop "$BENCH_PG_DIR" >/dev/null 2>&1 || true; rm -rf "$BENCH_PG_DIR"' EXIT
            log "starting a throwaway PostgreSQL for the durable scenarios"
            BENCH_DATABASE_URL=$(scripts/pg-cluster.sh start "$BENCH_PG_DIR" "${BENCH_PG_PORT:-55449}")
        fi
        "$TIDINGS" migrate --database-url "$BENCH_DATABASE_URL" >&2
    fi
    for scenario in "${LIST[@]}"; do
        scenario_args "$scenario" >/dev/null || { echo "bench.sh: unknown scenario $scenario" >&2; exit 64; }
        log "scenario $scenario: $(scenario_args "$scenario"), $RUNS run(s) each"
        for run in $(seq 1 "$RUNS"); do
            run_one "$scenario" tidings "$run"
            if [[ $FLOOR == 1 ]] && floor_supported "$scenario"; then run_one "$scenario" floor "$run"; fi
        done
    done
fi

if [[ $UPDATE_THRESHOLDS == 1 && $LOAD == 0 ]]; then
    # Only the thresholds were the point: keep the last full report.
    echo "thresholds updated in Benchmarks/Thresholds/ (report left as it was)" >&2
    exit $STATUS
fi

log "writing the report"
REPORT="$ROOT/Benchmarks/results/$DAY.md"
python3 "$ROOT/Benchmarks/report.py" "$RAW" \
    --micro "$MICRO_RESULT" --runs "$RUNS" --duration "$DURATION" \
    --pinning "${PIN_SERVER[*]:-unpinned} ${PIN_LOAD[*]:-}" --loadavg "$LOADAVG_START" >"$REPORT"
cp "$REPORT" "$ROOT/Benchmarks/results/latest.md"
echo "report: $REPORT (and Benchmarks/results/latest.md); raw JSON: $RAW" >&2
cat "$REPORT"
exit $STATUS
