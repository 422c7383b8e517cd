#!/usr/bin/env bash
# What a Tidings trigger costs a DBA's table: pgbench updating one row of `orders` per
# transaction (16 clients), on a throwaway cluster with fsync on, in the same run:
#   none      no trigger (the reference)
#   outbox    a trigger inserting one row into a plain outbox table (the floor for any trigger
#             that records an event)
#   notify    tidings.row_event, --wakeup notify (the default), a gateway listening
#   poll      tidings.row_event, --wakeup poll, a gateway listening
# Prints transactions per second for each and the ratio to `none`.
#
# Usage: scripts/bench-trigger.sh [--seconds N] [--clients N] [--runs N]
# Needs the release binary (`swift build -c release --product tidings`) and pgbench.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SECONDS_EACH=10
CLIENTS=16
RUNS=3
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) SECONDS_EACH=$2; shift 2 ;;
        --clients) CLIENTS=$2; shift 2 ;;
        --runs) RUNS=$2; shift 2 ;;
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
URL=$(scripts/pg-cluster.sh start "$DIR" "${BENCH_PG_PORT:-55448}")
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

gateway() { # notify | poll | stop
    if [[ -n "$GATEWAY" ]]; then kill "$GATEWAY"; wait "$GATEWAY" 2>/dev/null || true; GATEWAY=""; fi
    [[ "$1" == stop ]] && return
    "$TIDINGS" serve --port 0 --database-url "$URL" --wakeup "$1" --jwt-secret "bench-trigger-secret-0123456789-abcdef" \
        --log-level error >/dev/null 2>&1 &
    GATEWAY=$!
    sleep 1
}

tps() { # one pgbench run
    pgbench -n -c "$CLIENTS" -j 2 -T "$SECONDS_EACH" -f "$WORK/update.sql" "$URL" 2>/dev/null |
        awk '/^tps = / { printf "%d\n", $3 }'
}

declare -A RESULTS
for run in $(seq 1 "$RUNS"); do
    for mode in none outbox notify poll; do
        case "$mode" in
            none) trigger none; gateway stop ;;
            outbox) trigger outbox; gateway stop ;;
            notify) trigger tidings; gateway notify ;;
            poll) trigger tidings; gateway poll ;;
        esac
        value=$(tps)
        RESULTS[$mode]+="$value "
        printf '   run %d %-7s %s tps\n' "$run" "$mode" "$value" >&2
    done
done
gateway stop

median() { tr ' ' '\n' <<<"$1" | grep -v '^$' | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
base=$(median "${RESULTS[none]}")
printf '| trigger (pgbench, %s clients, 1 row per transaction, fsync on) | tps (median of %s) | ÷ no trigger |\n|---|---|---|\n' "$CLIENTS" "$RUNS"
for mode in none outbox notify poll; do
    value=$(median "${RESULTS[$mode]}")
    printf '| %s | %s [%s] | %.2f× |\n' "$mode" "$value" "$(echo "${RESULTS[$mode]}" | xargs | tr ' ' ',')" \
        "$(awk -v a="$value" -v b="$base" 'BEGIN { print a / b }')"
done
