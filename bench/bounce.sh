#!/bin/sh
# bounce.sh [SECONDS] [FILE.eml ...] - build bench_bounce (Release) and print the
# feedback parser's throughput per format and overall: messages/s and MB/s of
# input, each parse followed by the JSON of every recipient.  Default input: the
# golden samples in tests/unit/bounce/.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${VOLLEY_BENCH_BUILD:-$top/build-bench-bounce}
secs=${1:-3}
[ $# -gt 0 ] && shift
cmake -S "$top" -B "$build" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
cmake --build "$build" -j"$(nproc)" --target bench_bounce >/dev/null
echo "bench_bounce: $(nproc) CPU(s), $(uname -sr), one thread"
"$build/bench_bounce" -t "$secs" -d "$top/tests/unit/bounce" "$@"
