#!/usr/bin/env bash
# `make soak`: minutes of churn, slow clients, resumes and steady publishing against a spawned
# gateway (`tidings bench soak --spawn`); fails unless the server's memory and descriptors come
# back and every stream holds every event once, in order.
#
#   SOAK_SECONDS   length of the soak after the warm-up (default 600)
#   SOAK_WARMUP    warm-up seconds before it (default 30): the baseline is sampled after it
#   SOAK_MODE      memory (default) or postgres: a throwaway PostgreSQL cluster is started
#                  (SOAK_PG_PORT, default 55459) and removed afterwards
#   SOAK_ARGS      more arguments for `tidings bench soak` (e.g. "--churn 2000 --json")
set -euo pipefail
cd "$(dirname "$0")/.."

SOAK_SECONDS="${SOAK_SECONDS:-600}"
SOAK_WARMUP="${SOAK_WARMUP:-30}"
SOAK_MODE="${SOAK_MODE:-memory}"

swift build --product tidings
TIDINGS="$(swift build --show-bin-path)/tidings"
args=(bench soak --spawn --duration "${SOAK_SECONDS}s" --warmup "${SOAK_WARMUP}s")

case "$SOAK_MODE" in
    memory) ;;
    postgres)
        PG_DIR=$(mktemp -d /tmp/tidings-soak-pg.XXXXXX)
        PG_PORT="${SOAK_PG_PORT:-55459}"
        trap 'scripts/pg-cluster.sh stop "$PG_DIR" >/dev/null 2>&1 || true; rm -rf "$PG_DIR"' EXIT
        PG_CLUSTER_OPTIONS="-c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
            scripts/pg-cluster.sh start "$PG_DIR" "$PG_PORT" >/dev/null
        URL="$(scripts/pg-cluster.sh url "$PG_DIR" "$PG_PORT")"
        "$TIDINGS" migrate --database-url "$URL" >&2
        args+=(--server-arg=--database-url="$URL" --label tidings-postgres)
        ;;
    *) echo "soak.sh: SOAK_MODE must be memory or postgres, not $SOAK_MODE" >&2; exit 64 ;;
esac

# shellcheck disable=SC2086 # SOAK_ARGS is a list of words
"$TIDINGS" "${args[@]}" ${SOAK_ARGS:-}
