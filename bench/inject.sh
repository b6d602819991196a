#!/bin/bash
# inject.sh [MSGS] [SESSIONS...] - injection benchmark: an outside SMTP client (the
# rig's pipelining injector, ../shared/rig/tools/inject.c) sends MSGS messages of
# 3-5 KB (one recipient each, 100 per connection) over TCP to volleyd with durable
# commits on (spool.sync = true, spool on this machine's disk), once per SESSIONS
# value.  Prints per run: messages/s, volleyd CPU seconds and ms per message, peak
# RSS, and spool bytes per queued message.
#   MSGS      default 100000
#   SESSIONS  default "16 50"
#   BENCH_DIR where the spool and logs go (default /var/tmp/volley-bench)
#   VOLLEY_BUILD  build directory (default build-bench, built Release)
#   GROUP_USEC    spool.group_commit_usec (default: the config default)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rig=${RIG:-$top/../shared/rig}
msgs=${1:-100000}
shift || true
sessions=${*:-16 50}
dir=${BENCH_DIR:-/var/tmp/volley-bench}
build=${VOLLEY_BUILD:-$top/build-bench}
port=${PORT:-2526}
bin=$dir/bin

"$top/tools/build.sh" "$build" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
mkdir -p "$bin"
make -s -C "$rig/tools" OUT="$bin"
plan=$("$rig/gen.sh" "$msgs")

printf "%-8s %-8s %-8s %-10s %-8s %-14s %-11s %-11s %-10s\n" sessions msgs secs msgs_per_s \
    cpu_s cpu_ms_per_msg peak_rss_mb anon_rss_mb spool_B_per_msg
for s in $sessions; do
    rm -rf "$dir/spool" "$dir/log" && mkdir -p "$dir"
    cat >"$dir/volley.conf" <<CONF
spool: { dir = "$dir/spool"; map_size_mb = 16384; sync = true;
         ${GROUP_USEC:+group_commit_usec = $GROUP_USEC;} };
inject: { unix_socket = ""; tcp_listen = [ "127.0.0.1:$port" ]; hostname = "bench.test";
          max_connections = 2000; };
control: { socket = "$dir/control.sock"; };
log: { dir = "$dir/log"; level = "notice"; };
daemon: { pid_file = ""; };
CONF
    "$build/volleyd" -c "$dir/volley.conf" --foreground 2>"$dir/volleyd.err" &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.1
    done
    cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
    out=$("$bin/inject" 127.0.0.1 "$port" "$plan" "$s" 100)
    cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
    hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
    anon=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
    st=$("$build/volleyctl" -s "$dir/control.sock" status --json)
    kill $pid
    wait $pid || true
    ok=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$out")
    secs=$(sed -n 's/.* secs=\([0-9.]*\).*/\1/p' <<<"$out")
    used=$(tr -d ' \n' <<<"$st" | sed -n 's/.*"used_bytes":\([0-9]*\).*/\1/p')
    queued=$(tr -d ' \n' <<<"$st" | sed -n 's/.*"messages":\([0-9]*\).*/\1/p')
    [ "$ok" = "$msgs" ] || echo "WARNING: only $ok of $msgs accepted: $out" >&2
    awk -v s="$s" -v n="$ok" -v t="$secs" -v c0="$cpu0" -v c1="$cpu1" -v hz="$(getconf CLK_TCK)" \
        -v hwm="$hwm" -v anon="$anon" -v used="$used" -v q="$queued" 'BEGIN {
        cpu = (c1 - c0) / hz
        printf "%-8d %-8d %-8.2f %-10.0f %-8.2f %-14.3f %-11.1f %-11.1f %-10.0f\n", s, n, t,
            n / t, cpu, cpu * 1000 / n, hwm / 1024, anon / 1024, q ? used / q : 0 }'
done
