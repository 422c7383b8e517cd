#!/usr/bin/env bash
# What a Tidings trigger costs a DBA's table: pgbench updating one row of `orders` per
# transaction (16 clients), on a throwaway cluster with fsync on, in the same run:
#   none      no trigger (the reference)
#   outbox    a trigger inserting one row into a plain outbox table (the floor for any trigger
#             that records an event)
#   notify    tidings.row_event, --wakeup notify (the default), a gateway listening
#   poll      tidings.row_event, --wakeup poll, a gateway listening
# Prints transactions per second for each and the ratio to `none`, and for notify and poll the
# commit-to-delivery p99 from the gateway's histogram tidings_commit_to_delivery_seconds (the
# delta of its buckets over the pgbench run: an upper bucket bound, not an interpolation).
#
# Usage: scripts/bench-trigger.sh [--seconds N] [--clients N] [--runs N] [--port P] [--json-dir DIR]
#   --port P        port of the throwaway cluster (default $BENCH_PG_PORT, else 55448)
#   --json-dir DIR  also write DIR/trigger-<mode>-<run>.json for Benchmarks/report.py (make bench)
# Needs the release binary (`swift build -c release --product tidings`), pgbench, psql and curl.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=10
CLIENTS=16
RUNS=3
PORT=${BENCH_PG_PORT:-55448}
JSON_DIR=""
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_EACH=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
        --port) PORT=$2; shift 2 ;;
        --json-dir) JSON_DIR=$2; shift 2 ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "bench-trigger.sh: unknown option $1" >&2; exit 64 ;;
    esac
done

TIDINGS="$ROOT/.build/release/tidings"
[[ -x "$TIDINGS" ]] || swift build -c release --product tidings >&2
DIR=$(mktemp -d /tmp/tidings-trigger-pg.XXXXXX)
WORK=$(mktemp -d /tmp/tidings-trigger-work.XXXXXX)
GATEWAY=""
cleanup() {
    [[ -n "$GATEWAY" ]] && kill "$GATEWAY" 2>/dev/null || true
    scripts/pg-cluster.sh stop "$DIR" >/dev/null 2>&1 || true
    rm -rf "$DIR" "$WORK"
}
trap cleanup EXIT
URL=$(scripts/pg-cluster.sh start "$DIR" "$PORT")
"$TIDINGS" migrate --database-url "$URL" >/dev/null
psql -q "$URL" -v ON_ERROR_STOP=1 <<'SQL'
CREATE TABLE orders (id int PRIMARY KEY, user_id int NOT NULL, status text NOT NULL, total numeric(10,2) NOT NULL);
INSERT INTO orders SELECT n, n % 1000, 'new', 10 FROM generate_series(1, 10000) AS n;
CREATE TABLE outbox (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE FUNCTION outbox_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN INSERT INTO outbox (payload) VALUES (row_to_json(NEW)::jsonb); RETURN NULL; END $$;
VACUUM ANALYZE orders;
SQL
cat >"$WORK/update.sql" <<'SQL'
\set id random(1, 10000)
UPDATE orders SET total = total + 1 WHERE id = :id;
SQL

trigger() { # none | outbox | tidings
    psql -q "$URL" -v ON_ERROR_STOP=1 -c "SET client_min_messages = warning; DROP TRIGGER IF EXISTS bench ON orders" >/dev/null
    case "$1" in
        outbox) psql -q "$URL" -c "CREATE TRIGGER bench AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION outbox_row()" ;;
        tidings) psql -q "$URL" -c "CREATE TRIGGER bench AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION tidings.row_event('user_id', 'order')" ;;
    esac
}

GATEWAY_PORT=""
gateway() { # notify | poll | stop
    if [[ -n "$GATEWAY" ]]; then kill "$GATEWAY"; wait "$GATEWAY" 2>/dev/null || true; GATEWAY=""; fi
    [[ "$1" == stop ]] && return
    GATEWAY_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$TIDINGS" serve --host 127.0.0.1 --port "$GATEWAY_PORT" --database-url "$URL" --wakeup "$1" \
        --jwt-secret "bench-trigger-secret-0123456789-abcdef" --log-level error >"$WORK/gateway.log" 2>&1 &
    GATEWAY=$!
    local tries=0
    until curl -sf "http://127.0.0.1:$GATEWAY_PORT/readyz" >/dev/null; do
        tries=$((tries + 1))
        if [[ $tries -gt 300 ]] || ! kill -0 "$GATEWAY" 2>/dev/null; then
            echo "bench-trigger.sh: the gateway did not get ready:" >&2; tail -5 "$WORK/gateway.log" >&2; exit 1
        fi
        sleep 0.1
    done
}

metrics() { curl -sf "http://127.0.0.1:$GATEWAY_PORT/metrics" >"$1"; }

tps() { # one pgbench run
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" -f "$WORK/update.sql" "$URL" 2>/dev/null |
        awk '/^tps = / { printf "%d\n", $3 }'
}

declare -A RESULTS P99
for run in $(seq 1 "$RUNS"); do
    for mode in none outbox notify poll; do
        case "$mode" in
            none) trigger none; gateway stop ;;
            outbox) trigger outbox; gateway stop ;;
            notify) trigger tidings; gateway notify ;;
            poll) trigger tidings; gateway poll ;;
        esac
        [[ -n "$GATEWAY" ]] && metrics "$WORK/before.txt"
        value=$(tps)
        RESULTS[$mode]+="$value "
        delivery=""
        if [[ -n "$GATEWAY" ]]; then
            sleep 1  # the last commits' deliveries
            metrics "$WORK/after.txt"
            delivery=$(python3 Benchmarks/pgstats.py histogram "$WORK/before.txt" "$WORK/after.txt" tidings_commit_to_delivery_seconds)
            P99[$mode]+="$(python3 -c 'import json, sys; v = json.loads(sys.argv[1])["p99UpperBoundMs"]; print("inf" if v is None else "%g" % v)' "$delivery") "
        fi
        printf '   run %d %-7s %s tps%s\n' "$run" "$mode" "$value" "${delivery:+, commit→delivery $delivery}" >&2
        if [[ -n "$JSON_DIR" ]]; then
            printf '{"scenario": "trigger", "label": "%s", "settings": {"clients": %s, "seconds": %s},\n "trigger": {"tps": %s, "commitToDelivery": %s}}\n' \
                "$mode" "$CLIENTS" "$SECONDS_EACH" "${value:-null}" "${delivery:-null}" >"$JSON_DIR/trigger-$mode-$run.json"
        fi
    done
done
gateway stop

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
base=$(median "${RESULTS[none]}")
printf '| trigger (pgbench, %s clients, 1 row per transaction, fsync on) | tps (median of %s) | ÷ no trigger | commit→delivery p99 (bucket bound) |\n|---|---|---|---|\n' "$CLIENTS" "$RUNS"
for mode in none outbox notify poll; do
    value=$(median "${RESULTS[$mode]}")
    p99="–"
    [[ -n "${P99[$mode]:-}" ]] && p99="≤ $(median "${P99[$mode]}") ms"
    printf '| %s | %s [%s] | %.2f× | %s |\n' "$mode" "$value" "$(echo "${RESULTS[$mode]}" | xargs | tr ' ' ',')" \
        "$(awk -v a="$value" -v b="$base" 'BEGIN { print a / b }')" "$p99"
done
