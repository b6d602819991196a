#!/bin/sh
# run.sh [SECONDS] - build every libFuzzer target with clang and fuzz each for
# SECONDS (default 60), starting from its checked-in seeds.  New inputs go to a
# scratch corpus under the build directory; a crash fails the run and leaves its
# reproducer (crash-*) in the build directory.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-60}
build=${VOLLEY_FUZZ_BUILD:-$top/build-fuzz}
CC=clang cmake -S "$top" -B "$build" -DVOLLEY_FUZZ=ON -DVOLLEY_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target $(ls "$top"/tests/fuzz/fuzz_*.c | xargs -n1 basename | sed 's/\.c$//')
for src in "$top"/tests/fuzz/fuzz_*.c; do
    t=$(basename "$src" .c)
    mkdir -p "$build/corpus/$t"
    echo "== $t for ${secs}s"
    rc=0
    (cd "$build" && "./tests/fuzz/$t" -max_total_time="$secs" -print_final_stats=1 \
        "corpus/$t" "$top/tests/fuzz/corpus/$t" >"$build/$t.log" 2>&1) || rc=$?
    tail -n 8 "$build/$t.log"
    if [ "$rc" -ne 0 ]; then
        echo "FUZZ FAILURE: $t exited $rc (log: $build/$t.log)" >&2
        exit 1
    fi
done
echo "fuzz: all targets ran ${secs}s without a crash"
