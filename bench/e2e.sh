#!/bin/bash
# e2e.sh [MSGS] - the end-to-end benchmark on ../shared/rig: a network namespace with
# dnsmasq (500 test domains) and 8 receiving smtp-sinks; the rig's injector sends
# MSGS messages of 3-5 KB, one recipient each, over 50 sessions, and the clock runs
# from the first injection to the last message received by the sinks.  Runs volleyd
# (bench/rig-volley.sh) and Postfix (the rig's adapter) in the same invocation and
# prints both rows and the ratio.  Default MSGS 100000.  SPOOL=tmpfs is passed on.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rig=${RIG:-$top/../shared/rig}
msgs=${1:-100000}
"$top/tools/build.sh" "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
"$rig/setup.sh" >/dev/null
out=$(mktemp)
"$rig/run.sh" "$top/bench/rig-volley.sh" "$msgs" | tee "$out.v"
"$rig/run.sh" postfix "$msgs" | tee "$out.p"
val() { awk -v k="$1" '$1 == k {print $2}' "$2"; }
printf '\n%-10s %12s %14s %12s %12s\n' MTA e2e_msgs_s cpu_ms_per_msg peak_pss_mb delivered
for m in v p; do
    name=$([ $m = v ] && echo volley || echo postfix)
    printf '%-10s %12s %14s %12s %12s\n' "$name" "$(val e2e_rate "$out.$m")" \
        "$(val cpu_ms_per_msg "$out.$m")" "$(val peak_pss_mb "$out.$m")" "$(val delivered "$out.$m")"
done
awk -v a="$(val e2e_rate "$out.v")" -v b="$(val e2e_rate "$out.p")" \
    'BEGIN { if (b > 0) printf "volley / postfix end-to-end rate: %.1fx\n", a / b }'
rm -f "$out" "$out.v" "$out.p"
