#!/usr/bin/env bash
# The API description's checks (openapi/tidings.yaml), with Python tools from PyPI in a virtual
# environment under .build:
#   1. lint the document (openapi-spec-validator);
#   2. with EXCHANGES.jsonl (what the Swift tests recorded with TIDINGS_TEST_EXCHANGES), check
#      every answer the tests received against it (openapi-core);
#   3. start `tidings serve` in memory mode with a publish key on a free loopback port, check that
#      it serves the document (YAML and JSON, the same content), and fuzz it with schemathesis for
#      SCHEMATHESIS_SECONDS (default 60): server errors, conformance of every answer, and that a
#      rejected publish stored nothing (Tests/openapi/hooks.py). SCHEMATHESIS_SECONDS=0 skips it.
#
#   scripts/api-tests.sh [EXCHANGES.jsonl]
#
# Needs the debug binary (swift build). Exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.build/api-venv
source scripts/python-venv.sh
python_venv "$VENV" Tests/openapi/requirements.txt
PYTHON="$VENV/bin/python"
SPEC=openapi/tidings.yaml

"$VENV/bin/openapi-spec-validator" "$SPEC"
status=0
if [ $# -gt 0 ]; then
    "$PYTHON" Tests/openapi/check_exchanges.py "$SPEC" "$1" || status=1
fi

SECONDS_BUDGET="${SCHEMATHESIS_SECONDS:-60}"
[ "$SECONDS_BUDGET" -gt 0 ] || exit "$status"

BIN="${TIDINGS_BIN:-$(swift build --show-bin-path)/tidings}"
OUT="${TIDINGS_FUZZ_OUT:-$(pwd)/.build/api-fuzz}"
rm -rf "$OUT"
mkdir -p "$OUT"
PORT="$("$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
SECRET="fuzz-secret-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
KEY="fuzz-key-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
URL="http://127.0.0.1:$PORT"

"$BIN" serve --host 127.0.0.1 --port "$PORT" --jwt-secret "$SECRET" --publish-key "$KEY" --log-level error \
    >"$OUT/gateway.log" 2>&1 &
GATEWAY=$!
trap 'kill "$GATEWAY" 2>/dev/null || true; wait "$GATEWAY" 2>/dev/null || true' EXIT
fetch() { "$PYTHON" -c 'import sys, urllib.request; sys.stdout.buffer.write(urllib.request.urlopen(sys.argv[1], timeout=10).read())' "$1"; }
for _ in $(seq 1 100); do
    fetch "$URL/healthz" >/dev/null 2>&1 && break
    kill -0 "$GATEWAY" 2>/dev/null || { cat "$OUT/gateway.log"; exit 1; }
    sleep 0.1
done

# The binary carries the document: the YAML byte for byte, the JSON with the same content.
fetch "$URL/openapi.yaml" >"$OUT/openapi.yaml"
fetch "$URL/openapi.json" >"$OUT/openapi.json"
cmp -s "$SPEC" "$OUT/openapi.yaml" || { echo "openapi: GET /openapi.yaml is not $SPEC (rebuild?)"; exit 1; }
"$PYTHON" - "$OUT/openapi.yaml" "$OUT/openapi.json" <<'EOF'
import json, sys, yaml
served_yaml = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
served_json = json.load(open(sys.argv[2], encoding="utf-8"))
if served_yaml != served_json:
    sys.exit("openapi: GET /openapi.json and GET /openapi.yaml say different things")
print("openapi: /openapi.yaml and /openapi.json are served and say the same thing")
EOF

ROOT="$(pwd)"
# GET /events and GET /poll are not fuzzed: a valid request is a stream, or a poll that waits up
# to 60 s; the Swift tests' answers cover them (step 2).
cd "$OUT"
TIDINGS_FUZZ_URL="$URL" TIDINGS_FUZZ_PUBLISH_KEY="$KEY" \
TIDINGS_FUZZ_TOKEN="$("$BIN" token --secret "$SECRET" --sub fuzz --topics '*')" \
SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$ROOT/Tests/openapi" \
    "$ROOT/$VENV/bin/schemathesis" --config-file "$ROOT/Tests/openapi/schemathesis.toml" \
    run "$ROOT/$SPEC" --url "$URL" \
    --max-time "$SECONDS_BUDGET" --workers 1 --request-timeout 10 \
    --checks all --exclude-operation-id subscribe --exclude-operation-id poll \
    --report junit --report-dir "$OUT" --no-color || status=$?

kill -0 "$GATEWAY" 2>/dev/null || { echo "openapi: the gateway died during the fuzz run"; cat "$OUT/gateway.log"; status=1; }
exit "$status"
