#!/usr/bin/env bash
# `make run`: a development gateway on 127.0.0.1:8080 with a generated secret, plus tokens and
# ready-to-paste commands. With TIDINGS_RUN_MODE=postgres (the default once PostgreSQL mode is
# built) it also starts a private PostgreSQL cluster in .data/postgres.
set -euo pipefail
cd "$(dirname "$0")/.."

HOST=127.0.0.1
PORT="${TIDINGS_PORT:-8080}"
mkdir -p .data
if [ ! -s .data/dev-secret ]; then
    od -An -tx1 -N32 /dev/urandom | tr -d ' \n' > .data/dev-secret
fi
SECRET="$(cat .data/dev-secret)"
BIN="$(swift build --show-bin-path)/tidings"

SUB_TOKEN="$("$BIN" token --secret "$SECRET" --sub alice --topics 'news.*' --ttl 24h)"
PUB_TOKEN="$("$BIN" token --secret "$SECRET" --sub backend --publish --ttl 24h)"
URL="http://$HOST:$PORT"

cat <<TXT

  Tidings (memory mode) on $URL — dashboard: $URL/

  Subscriber token (user alice, topics news.*):
    $SUB_TOKEN
  Publisher token:
    $PUB_TOKEN

  Subscribe (leave it running):
    curl -N $URL/events -H "Authorization: Bearer $SUB_TOKEN"

  Publish to alice:
    curl -X POST $URL/events -H "Authorization: Bearer $PUB_TOKEN" -H 'Content-Type: application/json' \\
      -d '{"user":"alice","event":"order.updated","data":{"id":1,"status":"shipped"}}'

  Or with the CLI:
    $BIN tail --url $URL --token $SUB_TOKEN
    $BIN publish --url $URL --token $PUB_TOKEN --user alice --event order.updated --data '{"id":1}'

TXT
exec "$BIN" serve --host "$HOST" --port "$PORT" --jwt-secret "$SECRET" --log-level "${TIDINGS_LOG_LEVEL:-info}"
