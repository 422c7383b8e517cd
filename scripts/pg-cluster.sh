#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests.
#
#   scripts/pg-cluster.sh start DIR PORT   create (once) and start a cluster in DIR on 127.0.0.1:PORT
#   scripts/pg-cluster.sh stop DIR [MODE]  stop it (safe when it is not running); MODE is pg_ctl's
#                                          shutdown mode: fast (default) or immediate (a crash:
#                                          the next start recovers from the WAL)
#   scripts/pg-cluster.sh url DIR PORT     print the database URL of its `tidings` database
#
# Installs nothing (the Makefile does). The server runs as the `postgres` user (PostgreSQL
# refuses root), listens only on 127.0.0.1 with trust authentication (a private dev/test
# cluster, never a production one) and keeps its Unix socket inside DIR. Extra server options
# may be given in PG_CLUSTER_OPTIONS (e.g. "-c fsync=off" for faster throwaway test clusters).
set -euo pipefail

PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
PG_USER="${PG_USER:-postgres}"

usage() {
    echo "usage: $0 start DIR PORT | stop DIR [fast|immediate] | url DIR PORT" >&2
    exit 64
}

# Runs a command as the cluster's owner (directly when we already are that user).
as_owner() {
    if [ "$(id -un)" = "$PG_USER" ]; then
        "$@"
    else
        runuser -u "$PG_USER" -- "$@"
    fi
}

absolute() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$(pwd)" "$1" ;;
    esac
}

# Every parent of DIR must be traversable by the postgres user.
open_parents() {
    local dir
    dir="$(dirname "$1")"
    while [ "$dir" != "/" ]; do
        if ! as_owner test -x "$dir"; then
            chmod o+x "$dir"
        fi
        dir="$(dirname "$dir")"
    done
}

is_running() {
    [ -f "$1/data/postmaster.pid" ] && as_owner "$PG_BIN/pg_ctl" -D "$1/data" status >/dev/null 2>&1
}

start() {
    local dir port
    dir="$(absolute "$1")"
    port="$2"
    mkdir -p "$dir"
    open_parents "$dir"
    if [ "$(id -u)" = 0 ]; then
        chown "$PG_USER" "$dir"
    fi
    chmod 700 "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        as_owner "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
            || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if is_running "$dir"; then
        echo "pg-cluster: already running in $dir" >&2
    else
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c max_connections=200 ${PG_CLUSTER_OPTIONS:-}" \
            start >/dev/null \
            || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    fi
    local tries=0
    until as_owner "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; do
        tries=$((tries + 1))
        [ "$tries" -lt 100 ] || { echo "pg-cluster: server not ready" >&2; exit 1; }
        sleep 0.1
    done
    if ! as_owner "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = 'tidings'" | grep -q 1; then
        as_owner "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U postgres tidings
    fi
    url "$dir" "$port"
}

stop() {
    local dir mode
    dir="$(absolute "$1")"
    mode="${2:-fast}"
    case "$mode" in fast | immediate) ;; *) usage ;; esac
    if is_running "$dir"; then
        as_owner "$PG_BIN/pg_ctl" -D "$dir/data" -m "$mode" -w -t 60 stop >/dev/null
    fi
}

url() {
    printf 'postgresql://postgres@127.0.0.1:%s/tidings\n' "$2"
}

[ $# -ge 1 ] || usage
case "$1" in
    start) [ $# -eq 3 ] || usage; start "$2" "$3" ;;
    stop) [ $# -eq 2 ] || [ $# -eq 3 ] || usage; stop "$2" "${3:-fast}" ;;
    url) [ $# -eq 3 ] || usage; url "$2" "$3" ;;
    *) usage ;;
esac
