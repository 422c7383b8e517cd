#!/usr/bin/env bash
# `make run`: a development gateway on 127.0.0.1:8080 with a generated secret, plus tokens and
# ready-to-paste commands. PostgreSQL mode by default: a private cluster in .data/postgres (run as
# the `postgres` user), migrated, with the demo `orders` table. TIDINGS_RUN_MODE=memory skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=127.0.0.1
PORT="${TIDINGS_PORT:-8080}"
MODE="${TIDINGS_RUN_MODE:-postgres}"
PG_DIR="${PG_DIR:-$(pwd)/.data/postgres}"
PG_PORT="${PG_PORT:-55432}"

mkdir -p .data
if [ ! -s .data/dev-secret ]; then
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > .data/dev-secret
fi
SECRET="$(cat .data/dev-secret)"
BIN="$(swift build --show-bin-path)/tidings"

SERVE_ARGS=(serve --host "$HOST" --port "$PORT" --jwt-secret "$SECRET" --log-level "${TIDINGS_LOG_LEVEL:-info}")
if [ "$MODE" = "postgres" ]; then
    DATABASE_URL="$(scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT")"
    "$BIN" migrate --database-url "$DATABASE_URL"
    psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -f examples/orders.sql
    SERVE_ARGS+=(--database-url "$DATABASE_URL")
fi

SUB_TOKEN="$("$BIN" token --secret "$SECRET" --sub 42 --topics 'news.*' --ttl 24h)"
PUB_TOKEN="$("$BIN" token --secret "$SECRET" --sub backend --publish --ttl 24h)"
URL="http://$HOST:$PORT"

cat <<TXT

  Tidings ($MODE mode) on $URL — dashboard: $URL/

  Demo page, with these tokens filled in (open it, watch events arrive, press "Publish test event"):
    $URL/demo#token=$SUB_TOKEN&pub=$PUB_TOKEN&connect=1

  Subscriber token (user 42, topics news.*):
    $SUB_TOKEN
  Publisher token:
    $PUB_TOKEN

  Subscribe (leave it running in another terminal):
    curl -N $URL/events -H "Authorization: Bearer $SUB_TOKEN"

  Publish to user 42 over HTTP:
    curl -X POST $URL/events -H "Authorization: Bearer $PUB_TOKEN" -H 'Content-Type: application/json' \\
      -d '{"user":"42","event":"order.updated","data":{"id":1,"status":"shipped"}}'

  Or with the CLI:
    $BIN tail --url $URL --token $SUB_TOKEN
    $BIN publish --url $URL --token $PUB_TOKEN --user 42 --event order.updated --data '{"id":1}'
TXT
if [ "$MODE" = "postgres" ]; then
cat <<TXT

  From SQL (the orders table has a tidings.row_event trigger; user 42 owns order 1):
    psql "$DATABASE_URL"
      UPDATE orders SET status = 'shipped' WHERE id = 1;
      SELECT tidings.publish('user:42', 'notice', '{"text":"hello from SQL"}');
      NOTIFY tidings, '{"user":"42","event":"maintenance","data":{"in":"5m"}}';

  Stop the database afterwards with: make db-stop
TXT
fi
echo
exec "$BIN" "${SERVE_ARGS[@]}"
