#!/usr/bin/env bash
# What `make bench` runs: the micro-benchmarks with their threshold check, then the load
# scenarios of issue 4 against Tidings and against the C floor (Benchmarks/reference/floor.c),
# and those of issue 11 over WebSockets and long polling (Tidings only, beside its SSE runs),
# server pinned to one core and load generator to the other, each figure the median of --runs
# runs; then the PostgreSQL scenarios, each against a reference measured in the same run (pgbench
# on the same cluster, no trigger, one gateway). Writes Benchmarks/results/<date>.md and
# Benchmarks/results/latest.md.
#
# Usage: scripts/bench.sh [options]
#   --runs N            runs per scenario and server (default 3)
#   --scenarios LIST    comma-separated subset of: light,wslight,polllight,overload,wsoverload,
#                       fanout10k,users,idle,wsidle,replay,durablereplay,durable,durable1,
#                       durable16,durable64,trigger,multi (default: all)
#                       wslight, wsoverload, wsidle  light, overload and idle over WebSockets
#                                      (GET /ws), compared in the report with their SSE runs of
#                                      the same bench run (keep light, overload, idle in the list)
#                       polllight      light fan-out as a long-poll loop (GET /poll, 2,000
#                                      clients re-polling at once), compared with light
#   --no-durable        skip the PostgreSQL scenarios:
#                       durablereplay  replay from the database
#                       durable        16 publishers, batches of 100
#                       durable1, durable16, durable64  1, 16, 64 publisher connections, one
#                                      event per request; reference: pgbench inserting the same
#                                      row with as many clients (commits/s, commit latency)
#                       trigger        scripts/bench-trigger.sh: pgbench updating `orders` with
#                                      no trigger (the reference), an outbox trigger, row_event
#                                      with --wakeup notify and poll; commit→delivery p99
#                       multi          3 gateways on one database, streams spread over them,
#                                      publishers on one, at 1,000 and 10,000 events/s offered;
#                                      database CPU and transactions; reference: one gateway
#   --duration D        measurement window of each run (default 10s)
#   --quick             1 run, 5s windows: a smoke test, not a measurement
#   --no-micro          skip the package-benchmark suites
#   --no-load           skip the load scenarios
#   --no-floor          skip the C floor reference runs
#   --update-thresholds rewrite Benchmarks/Thresholds from this machine instead of checking
#   --server-cpu N / --load-cpu N   cores to pin to (default 0 and 1)
# Environment: BENCH_DATABASE_URL  the database of the durable scenarios; without it a
#              throwaway cluster (fsync on, as in production) is started on port
#              BENCH_PG_PORT (default 55449) and removed afterwards. The trigger scenario
#              always uses a throwaway cluster of its own, on BENCH_PG_PORT + 1.
# Exit status: 0 when every step ran and no micro-benchmark regressed past its threshold.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

RUNS=3
DURATION=10s
SCENARIOS=light,wslight,polllight,overload,wsoverload,fanout10k,users,idle,wsidle,replay,durablereplay,durable,durable1,durable16,durable64,trigger,multi
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
if [[ $DURABLE == 0 ]]; then SCENARIOS=$(tr ',' '\n' <<<"$SCENARIOS" | grep -v -E '^(durable|trigger$|multi$)' | paste -sd, -); fi

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

    MULTI_RATES=(1000 10000)
    # name | servers | arguments
    scenario_args() {
        case "$1" in
            light) echo "fanout --connections 2000 --rate 20" ;;
            wslight) echo "fanout --connections 2000 --rate 20 --transport ws" ;;
            polllight) echo "fanout --connections 2000 --rate 20 --transport poll" ;;
            overload) echo "fanout --connections 2000 --rate 200 --publish-connections 16" ;;
            wsoverload) echo "fanout --connections 2000 --rate 200 --publish-connections 16 --transport ws" ;;
            fanout10k) echo "fanout --connections 10000 --rate 200 --ramp 4000 --publish-connections 16" ;;
            users) echo "users --connections 2000 --publish-connections 16 --pipeline 4" ;;
            idle) echo "idle --connections 10000 --ramp 4000 --duration 3s" ;;
            wsidle) echo "idle --connections 10000 --ramp 4000 --duration 3s --transport ws" ;;
            replay|durablereplay) echo "replay --missed 999 --iterations 20 --background 99000" ;;
            durable) echo "users --connections 200 --publish-connections 16 --batch 100" ;;
            durable1) echo "users --connections 200 --publish-connections 1 --pipeline 1" ;;
            durable16) echo "users --connections 200 --publish-connections 16 --pipeline 1" ;;
            durable64) echo "users --connections 200 --publish-connections 64 --pipeline 1" ;;
            trigger) echo "(scripts/bench-trigger.sh: pgbench, 16 clients)" ;;
            multi) echo "(users --connections 600 --publish-connections 64 --rate ${MULTI_RATES[*]} over 3 gateways and over 1)" ;;
            *) return 1 ;;
        esac
    }
    # The C floor speaks SSE only.
    floor_supported() { [[ "$1" != replay && "$1" != durable* && "$1" != trigger && "$1" != multi && "$1" != ws* && "$1" != poll* ]]; }
    # The reference of durable1/16/64: pgbench with as many clients storing the same row.
    pgbench_clients() { case "$1" in durable1) echo 1 ;; durable16) echo 16 ;; durable64) echo 64 ;; *) return 1 ;; esac; }
    whole_seconds() { # a --duration value (10s, 1m, 500ms) in whole seconds, at least 1
        case "$1" in
            *ms) echo 1 ;;
            *m) echo $(( ${1%m} * 60 )) ;;
            *s) echo $(( ${1%s} > 0 ? ${1%s} : 1 )) ;;
            *) echo "$1" ;;
        esac
    }
    # The interpreter itself (not a version manager's shim): the window hook runs it twice per run.
    PYTHON=$(python3 -c 'import sys; print(sys.executable)')
    free_port() { "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

    run_one() { # scenario server run
        local scenario=$1 server=$2 run=$3 out="$RAW/$1-$2-$3.json"
        local args
        args=$(scenario_args "$scenario")
        local spawn=(--spawn)
        [[ $server == floor ]] && spawn=(--spawn-command "$FLOOR_BIN {port}" --label floor)
        local extra=()
        [[ $scenario == durable* ]] && extra=(--server-arg=--database-url="$BENCH_DATABASE_URL")
        case "$scenario" in *idle|*replay) ;; *) extra+=(--duration "$DURATION") ;; esac
        printf '   %-10s %-8s run %d: tidings bench %s\n' "$scenario" "$server" "$run" "$args" >&2
        # shellcheck disable=SC2086
        if ! timeout 600 "$TIDINGS" bench $args "${spawn[@]}" "${PIN_SERVER[@]}" "${PIN_LOAD[@]}" \
            "${extra[@]}" --quiet --json >"$out" 2>"$RAW/$1-$2-$3.err"; then
            echo "   failed: $(tail -3 "$RAW/$1-$2-$3.err")" >&2
            rm -f "$out"
            STATUS=1
        fi
    }

    run_pgbench() { # scenario run
        local clients out="$RAW/$1-pgbench-$2.json" work="$RAW/pgbench-$1-$2"
        clients=$(pgbench_clients "$1")
        mkdir -p "$work"
        psql -Xq -v ON_ERROR_STOP=1 "$BENCH_DATABASE_URL" -c "TRUNCATE bench_commit" >/dev/null
        printf '   %-10s %-8s run %d: pgbench -c %d, one INSERT per transaction\n' "$1" pgbench "$2" "$clients" >&2
        # shellcheck disable=SC2086
        if ! (cd "$work" && ${PIN_LOAD:+taskset -c "$LOAD_CPU"} pgbench -n -c "$clients" -j "$(( clients < 2 ? 1 : 2 ))" \
                -T "$(whole_seconds "$DURATION")" -l --log-prefix "$work/log" -f "$ROOT/Benchmarks/reference/pgbench-commit.sql" \
                "$BENCH_DATABASE_URL" >"$work/stdout" 2>"$work/stderr") ||
            ! "$PYTHON" "$ROOT/Benchmarks/pgstats.py" floor "$out" "$work/stdout" "$work/log" "$clients"; then
            echo "   failed: $(tail -3 "$work/stderr")" >&2
            rm -f "$out"
            STATUS=1
        fi
        rm -rf "$work"
    }

    run_trigger() { # the whole of scripts/bench-trigger.sh, its runs into $RAW
        printf '   trigger: scripts/bench-trigger.sh --runs %d --seconds %d\n' "$RUNS" "$(whole_seconds "$DURATION")" >&2
        if ! scripts/bench-trigger.sh --runs "$RUNS" --seconds "$(whole_seconds "$DURATION")" \
            --port "$(( ${BENCH_PG_PORT:-55449} + 1 ))" --json-dir "$RAW" >"$RAW/trigger.md" 2>"$RAW/trigger.err"; then
            echo "   failed: $(tail -3 "$RAW/trigger.err")" >&2
            STATUS=1
        fi
    }

    with_application_name() { # URL NAME
        if [[ $1 == *\?* ]]; then echo "$1&application_name=$2"; else echo "$1?application_name=$2"; fi
    }

    run_multi() { # rate instances run
        local rate=$1 instances=$2 run=$3 server
        server=$([[ $instances == 1 ]] && echo one || echo three)
        local base="$RAW/multi$rate-$server-$run"
        local secret key i port
        secret=$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')
        key=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
        local pids=() urls=() gateways=()
        for i in $(seq 1 "$instances"); do
            port=$(free_port)
            ${PIN_SERVER:+taskset -c "$SERVER_CPU"} "$TIDINGS" serve --host 127.0.0.1 --port "$port" \
                --database-url "$(with_application_name "$BENCH_DATABASE_URL" "tidings-$i")" --jwt-secret "$secret" \
                --publish-key "$key" --log-level warning >"$base-gateway$i.log" 2>&1 &
            pids+=($!)
            urls+=(--url "http://127.0.0.1:$port")
            gateways+=(--gateway "tidings-$i=http://127.0.0.1:$port")
        done
        local ready=1
        for i in $(seq 0 $(( instances - 1 ))); do
            local tries=0
            until curl -sf "${urls[$(( i * 2 + 1 ))]}/readyz" >/dev/null; do
                tries=$((tries + 1))
                if [[ $tries -gt 300 ]] || ! kill -0 "${pids[$i]}" 2>/dev/null; then ready=0; break; fi
                sleep 0.1
            done
        done
        local hook
        hook=$(printf '%q ' "$PYTHON" "$ROOT/Benchmarks/pgstats.py" sample "$base.samples" "$BENCH_DATABASE_URL" "${gateways[@]}")
        printf '   %-10s %-8s run %d: %d gateway(s), %d events/s offered\n' "multi$rate" "$server" "$run" "$instances" "$rate" >&2
        if [[ $ready == 0 ]]; then
            echo "   failed: a gateway did not get ready: $(tail -3 "$base-gateway1.log")" >&2
            STATUS=1
        elif ! timeout 600 "$TIDINGS" bench users "${urls[@]}" --jwt-secret "$secret" --publisher-token "$key" \
                --connections 600 --publish-connections 64 --rate "$rate" --duration "$DURATION" "${PIN_LOAD[@]}" \
                --label "tidings-x$instances" --window-hook "$hook" --quiet --json >"$base.json" 2>"$base.err" ||
            ! "$PYTHON" "$ROOT/Benchmarks/pgstats.py" window "$base.samples" "$base.json"; then
            echo "   failed: $(tail -3 "$base.err")" >&2
            rm -f "$base.json"
            STATUS=1
        fi
        kill "${pids[@]}" 2>/dev/null || true
        wait "${pids[@]}" 2>/dev/null || true
    }

    IFS=',' read -r -a LIST <<<"$SCENARIOS"
    if [[ ",$SCENARIOS," == *,durable* || ",$SCENARIOS," == *,multi,* ]]; then
        if [[ -z "${BENCH_DATABASE_URL:-}" ]]; then
            BENCH_PG_DIR=$(mktemp -d /tmp/tidings-bench-pg.XXXXXX)
            trap 'scripts/pg-cluster.sh stop "$BENCH_PG_DIR" >/dev/null 2>&1 || true; rm -rf "$BENCH_PG_DIR"' EXIT
            log "starting a throwaway PostgreSQL for the durable scenarios"
            BENCH_DATABASE_URL=$(scripts/pg-cluster.sh start "$BENCH_PG_DIR" "${BENCH_PG_PORT:-55449}")
        fi
        "$TIDINGS" migrate --database-url "$BENCH_DATABASE_URL" >&2
        # The pgbench reference's table: an event's row and indexes, without Tidings' ordering.
        psql -Xq -v ON_ERROR_STOP=1 "$BENCH_DATABASE_URL" >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE TABLE IF NOT EXISTS bench_commit (
    id bigserial PRIMARY KEY, targets text[] NOT NULL, event text NOT NULL, data json NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS bench_commit_targets_idx ON bench_commit USING gin (targets);
CREATE INDEX IF NOT EXISTS bench_commit_created_at_idx ON bench_commit (created_at);
SQL
    fi
    for scenario in "${LIST[@]}"; do
        scenario_args "$scenario" >/dev/null || { echo "bench.sh: unknown scenario $scenario" >&2; exit 64; }
        log "scenario $scenario: $(scenario_args "$scenario"), $RUNS run(s) each"
        if [[ $scenario == trigger ]]; then run_trigger; continue; fi
        for run in $(seq 1 "$RUNS"); do
            if [[ $scenario == multi ]]; then
                for rate in "${MULTI_RATES[@]}"; do
                    run_multi "$rate" 3 "$run"
                    run_multi "$rate" 1 "$run"
                done
                continue
            fi
            run_one "$scenario" tidings "$run"
            if [[ $FLOOR == 1 ]] && floor_supported "$scenario"; then run_one "$scenario" floor "$run"; fi
            if pgbench_clients "$scenario" >/dev/null; then run_pgbench "$scenario" "$run"; fi
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
