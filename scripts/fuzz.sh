#!/usr/bin/env bash
# `make fuzz`: builds the fuzz targets (Fuzz/) with libFuzzer and AddressSanitizer into
# .build-fuzz (the normal .build is untouched) and runs each for FUZZ_SECONDS (default 60),
# starting from its seed corpus in Fuzz/Corpus/<target> and its dictionary. New corpus entries
# go to a scratch folder, never into the repository. Exits non-zero when any target crashed or
# broke a property, printing the reproducer's path and the command that replays it.
#
#   FUZZ_SECONDS=600 make fuzz                 # longer
#   FUZZ_TARGETS="PublishBody SSEFrame" make fuzz
#   FUZZ_WORK=/tmp/fuzz make fuzz              # scratch folder (default .build-fuzz/work)
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${FUZZ_SECONDS:-60}"
TARGETS="${FUZZ_TARGETS:-PublishBody SSEFrame Credentials WebSocketMessage}"
BUILD=.build-fuzz
WORK="${FUZZ_WORK:-$BUILD/work}"

declare -A DICTIONARY=(
    [PublishBody]=Fuzz/Dictionaries/json.dict
    [WebSocketMessage]=Fuzz/Dictionaries/websocket.dict
    [Credentials]=Fuzz/Dictionaries/credentials.dict
)

# Readable AddressSanitizer reports need llvm-symbolizer: the Swift toolchain's, else the system's.
symbolizer="$(dirname "$(readlink -f "$(command -v swift)")")/llvm-symbolizer"
if [ ! -x "$symbolizer" ]; then
    command -v llvm-symbolizer >/dev/null 2>&1 || scripts/install-deps.sh --fuzz
    symbolizer="$(command -v llvm-symbolizer)"
fi
export ASAN_SYMBOLIZER_PATH="$symbolizer"
# Swift's runtime keeps metadata and caches for the life of the process, which LeakSanitizer
# would report after every run; the targets look for memory errors and broken properties.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0:symbolize=1}"
# Swift's own crash backtracer reads the crashed thread's stack, which AddressSanitizer reports
# as an error of its own; libFuzzer and ASan print the stack instead.
export SWIFT_BACKTRACE=enable=no

started=$(date +%s)
for target in $TARGETS; do
    TIDINGS_FUZZ=1 swift build --build-path "$BUILD" --product "Fuzz$target" 2>&1 | grep -E "error:|warning:.*Fuzz/|Build of product" || true
    [ -x "$BUILD/debug/Fuzz$target" ] || { echo "fuzz: Fuzz$target did not build" >&2; exit 1; }
done
echo "fuzz: built in $(($(date +%s) - started)) s"

status=0
for target in $TARGETS; do
    corpus="$WORK/corpus/$target"
    crashes="$WORK/crashes/$target"
    log="$WORK/logs/$target.log"
    mkdir -p "$corpus" "$crashes" "$(dirname "$log")"
    args=(-max_total_time="$SECONDS_PER_TARGET" -max_len=4096 -timeout=10 -rss_limit_mb=4096
          -print_final_stats=1 -artifact_prefix="$crashes/")
    [ -z "${DICTIONARY[$target]:-}" ] || args+=(-dict="${DICTIONARY[$target]}")
    echo "fuzz: $target for ${SECONDS_PER_TARGET}s (log $log)"
    result=0
    "$BUILD/debug/Fuzz$target" "${args[@]}" "$corpus" "Fuzz/Corpus/$target" >"$log" 2>&1 || result=$?
    runs=$(grep -oE "stat::number_of_executed_units: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    speed=$(grep -oE "stat::average_exec_per_sec: *[0-9]+" "$log" | grep -oE "[0-9]+$" || echo "?")
    echo "fuzz: $target: $runs runs, $speed per second, corpus $(ls "$corpus" | wc -l) new entries"
    if [ "$result" -ne 0 ]; then
        status=1
        grep -E "property failed|Fatal error|ERROR: (AddressSanitizer|libFuzzer)|SUMMARY" "$log" | head -n 20 || tail -n 40 "$log"
        for artifact in $(grep -oE "Test unit written to [^ ]+" "$log" | awk '{print $5}'); do
            echo "fuzz: reproducer $artifact"
            echo "fuzz: replay with: TIDINGS_FUZZ=1 swift build --build-path $BUILD --product Fuzz$target && $BUILD/debug/Fuzz$target $artifact"
        done
    fi
done
exit "$status"
