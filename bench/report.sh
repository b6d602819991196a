#!/bin/sh
# report.sh - time `volleyctl report` on a generated 10,000,000-line accounting log.
#
# usage: bench/report.sh [BUILD_DIR] [LINES]     (defaults: build, 10000000)
#
# Builds nothing: BUILD_DIR must hold volleyctl and gen_acct (the top-level
# CMakeLists.txt builds bench/gen_acct.c).  Writes the log (about 500 bytes a line,
# so ~5 GB for the default) into a temporary directory that is removed on exit:
# under /dev/shm when it has room (so that neither generating nor reading waits
# for a disk), else under $TMPDIR or /tmp.  Then runs --by domain and --by campaign
# under /usr/bin/time -v, printing wall and CPU seconds, lines/s and peak RSS.
# With JANSSON=1 it also times the jansson-only parser (--parser jansson) against
# the default on the first 1,000,000 lines, which is enough to see the ratio.
set -eu

build=${1:-build}
lines=${2:-10000000}
ctl=$build/volleyctl
gen=$build/gen_acct
for f in "$ctl" "$gen"; do
    [ -x "$f" ] || { echo "report.sh: $f not found; build first" >&2; exit 1; }
done
[ -x /usr/bin/time ] || { echo "report.sh: needs /usr/bin/time (GNU time)" >&2; exit 1; }

base=${TMPDIR:-/tmp}
need_kb=$((lines / 1000 * 600))
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] &&
    [ "$(df -Pk /dev/shm | awk 'NR == 2 {print $4}')" -gt $((need_kb * 2)) ]; then
    base=/dev/shm
fi
tmp=$(mktemp -d "$base/volley-report.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
log=$tmp/accounting.log

start=$(date +%s.%N)
"$gen" "$lines" > "$log"
end=$(date +%s.%N)
size=$(wc -c < "$log")
printf 'generated %s lines, %s bytes in %.1f s\n' "$lines" "$size" "$(echo "$end - $start" | bc)"
cat "$log" > /dev/null # warm the page cache

# run NAME FILE LINES ARGS... - one timed report of FILE; the report goes to a file
run() {
    name=$1
    file=$2
    n=$3
    shift 3
    /usr/bin/time -v -o "$tmp/time" "$ctl" report --log "$file" "$@" > "$tmp/out" 2> "$tmp/err"
    secs=$(awk -F': ' '/Elapsed \(wall clock\)/ {
        n = split($2, t, ":"); s = 0; for (i = 1; i <= n; i++) s = s * 60 + t[i]; print s }' "$tmp/time")
    cpu=$(awk -F': ' '/User time|System time/ {s += $2} END {print s}' "$tmp/time")
    rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$tmp/time")
    rate=$(echo "$n / $secs" | bc)
    printf '%-34s %7.2f s wall %7.2f s cpu %9s lines/s  peak RSS %6d KB  (%s output lines)\n' \
        "$name" "$secs" "$cpu" "$rate" "$rss" "$(wc -l < "$tmp/out")"
}

echo "log in $tmp; load: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)"
run "--by domain" "$log" "$lines" --by domain
run "--by campaign" "$log" "$lines" --by campaign
run "--by campaign --format json" "$log" "$lines" --by campaign --format json
if [ "${JANSSON:-0}" = 1 ]; then
    head -n 1000000 "$log" > "$tmp/1m.log"
    run "1M lines --by domain" "$tmp/1m.log" 1000000 --by domain
    run "1M lines --by domain --parser jansson" "$tmp/1m.log" 1000000 --by domain --parser jansson
fi
