#!/usr/bin/env bash
# Installs what building and testing Tidings needs and the machine lacks: libpq's headers and
# pkg-config file (the CLibPQ system library), and the PostgreSQL 15 server for `make run` and
# the database tests; with --browser also what the browser suite needs (Chromium, its driver, a
# Python venv); with --deploy what the deploy tests need (nginx, openssl, systemd-analyze, a Python venv);
# with --fuzz llvm-symbolizer when the Swift toolchain has none (readable sanitizer reports). Debian
# packages only; does nothing when everything is there.
set -euo pipefail

need=()
if [ "${1:-}" = "--browser" ]; then
    command -v chromium >/dev/null 2>&1 || need+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
fi
if [ "${1:-}" = "--deploy" ]; then
    [ -x /usr/sbin/nginx ] || need+=(nginx)
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
    python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
fi
if [ "${1:-}" = "--fuzz" ]; then
    command -v llvm-symbolizer >/dev/null 2>&1 || need+=(llvm)
fi
pkg-config --exists libpq 2>/dev/null || need+=(libpq-dev pkg-config)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
command -v psql >/dev/null 2>&1 || need+=(postgresql-client-15)
command -v curl >/dev/null 2>&1 || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
    exit 0
fi
echo "install-deps: installing ${need[*]}" >&2
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# The postgresql-15 package would start a system cluster on 5432; we run private clusters, so
# keep the package from creating or starting one.
if [[ " ${need[*]} " == *" postgresql-15 "* ]]; then
    $SUDO mkdir -p /etc/postgresql-common
    echo "create_main_cluster = false" | $SUDO tee /etc/postgresql-common/createcluster.conf >/dev/null
fi
# The nginx package would start a system nginx on port 80; the proxy test runs its own on
# loopback, so keep every package from starting a service while installing.
policy=/usr/sbin/policy-rc.d
made_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod +x "$policy"
    made_policy=1
fi
status=0
$SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null || status=$?
[ -z "$made_policy" ] || $SUDO rm -f "$policy"
exit "$status"
