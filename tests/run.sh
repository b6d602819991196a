#!/bin/sh
# run.sh - build Volley and run every test: unit tests (cmocka via ctest) and
# integration tests (pytest against the real volleyd).
#   VOLLEY_BUILD=DIR      build directory (default: build)
#   VOLLEY_SANITIZE=1     build with AddressSanitizer + UndefinedBehaviorSanitizer
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${VOLLEY_BUILD:-$top/build}
opts=""
[ "${VOLLEY_SANITIZE:-0}" = 1 ] && opts="-DVOLLEY_SANITIZE=ON"
"$top/tools/build.sh" "$build" $opts
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
echo "== unit tests"
ctest --test-dir "$build" --output-on-failure
echo "== integration tests"
VOLLEY_BUILD="$build" /usr/bin/python3 -m pytest -q "$top/tests/integration"
