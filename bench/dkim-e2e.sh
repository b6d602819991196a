#!/bin/bash
# dkim-e2e.sh [MSGS] [RUNS] - the end-to-end benchmark (../shared/rig, as e2e.sh) with
# DKIM signing off, with an Ed25519 key and with an RSA-2048 key for the injector's
# From domain (inject.test), in alternation, RUNS times each (default 2), and the
# signed rates relative to unsigned.  Target: Ed25519 within 15 % of unsigned.
# BASE_BIN=/path/to/volleyd adds a fourth mode, "ed-base": that build signing with
# the same Ed25519 key (to compare two builds in one run).  MODES="off ed25519"
# narrows the set (more runs of the pair in the same time: this VM's run-to-run
# noise is ±20 %, so the mean of several alternations is the figure to quote).
# The signed modes use the default dkim.sign_threads (1 signing thread; SIGN_THREADS=N
# sets another count); "ed-inline" and "rsa-inline" sign on the delivery thread
# (dkim.sign_threads = 0), to compare.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rig=${RIG:-$top/../shared/rig}
msgs=${1:-100000}
runs=${2:-2}
"$top/tools/build.sh" "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
"$rig/setup.sh" >/dev/null
keys=$(mktemp -d)
trap 'rm -rf "$keys"' EXIT
openssl genpkey -algorithm ED25519 -out "$keys/ed.pem" 2>/dev/null
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$keys/rsa.pem" 2>/dev/null
chmod 644 "$keys"/*.pem
modes=${MODES:-off ed25519 rsa2048}
[ -n "${BASE_BIN:-}" ] && modes="$modes ed-base"
declare -A sum cpu last
pairs=""
for r in $(seq "$runs"); do
    # ABBA order: every other round runs the modes backwards, so a drift of the
    # machine's speed during the set weighs on every mode alike
    order=$modes
    [ $((r % 2)) = 0 ] && order=$(tr ' ' '\n' <<<"$modes" | tac | tr '\n' ' ')
    for mode in $order; do
        bin=$top/build-bench/volleyd
        case $mode in
        off) dk="" ;;
        ed25519) dk="inject.test:ed:$keys/ed.pem" ;;
        rsa2048) dk="inject.test:rsa:$keys/rsa.pem" ;;
        ed-base) dk="inject.test:ed:$keys/ed.pem" bin=$BASE_BIN ;;
        ed-inline) dk="inject.test:ed:$keys/ed.pem" ;;
        rsa-inline) dk="inject.test:rsa:$keys/rsa.pem" ;;
        esac
        dkopts=""
        [ -n "${SIGN_THREADS:-}" ] && dkopts="sign_threads = $SIGN_THREADS;"
        case $mode in *-inline) dkopts="sign_threads = 0;" ;; esac
        # a run that does not deliver everything in the rig's time still reports
        out=$(VOLLEY_BIN="$bin" VOLLEY_DKIM="$dk" VOLLEY_DKIM_OPTS="$dkopts" "$rig/run.sh" "$top/bench/rig-volley.sh" "$msgs" 2>&1 || true)
        rate=$(awk '$1 == "e2e_rate" {print $2}' <<<"$out")
        c=$(awk '$1 == "cpu_ms_per_msg" {print $2}' <<<"$out")
        printf 'run %d  %-10s  %8s msgs/s  %5s ms/msg\n' "$r" "$mode" "$rate" "$c"
        sum[$mode]=$(awk -v a="${sum[$mode]:-0}" -v b="$rate" 'BEGIN {print a + b}')
        cpu[$mode]=$(awk -v a="${cpu[$mode]:-0}" -v b="$c" 'BEGIN {print a + b}')
        last[$mode]=$rate
    done
    # this round's Ed25519 rate as a share of its own unsigned run
    [ -n "${last[off]:-}" ] && [ -n "${last[ed25519]:-}" ] &&
        pairs="$pairs $(awk -v e="${last[ed25519]}" -v o="${last[off]}" 'BEGIN {if (o > 0) printf "%.1f", 100 * e / o}')"
done
for mode in $modes; do
    # without unsigned runs (MODES without "off") there is no share to give
    awk -v m="$mode" -v s="${sum[$mode]}" -v c="${cpu[$mode]}" -v base="${sum[off]:-0}" -v n="$runs" \
        'BEGIN { printf "%-10s mean %8.0f msgs/s  %.3f ms/msg", m, s / n, c / n
                 if (base > 0) printf "  %5.1f%% of unsigned", 100 * s / base
                 printf "\n" }'
done
# the median round is the figure least moved by one run in a slow phase of the VM
[ -n "$pairs" ] && tr ' ' '\n' <<<"$pairs" | sed '/^$/d' | sort -n |
    awk '{v[NR] = $1} END {m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
         printf "ed25519 per round (%% of that round'"'"'s unsigned run):"
         for (i = 1; i <= NR; i++) printf " %s", v[i]; printf "  median %.1f%%\n", m}'
exit 0
