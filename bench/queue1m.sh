#!/bin/bash
# queue1m.sh [RCPTS] - a big queue: fill the spool with RCPTS recipients (default
# 1,000,000: 10,000 messages x 100 recipients over the demo's loopback mail world,
# tools/testnet.sh) with delivery.enabled = false, stop volleyd, start it again with
# delivery on, and report: time from the restart to the first delivery (from the
# accounting log), peak resident memory (VmHWM and the anon part) during the first
# DRAIN_S seconds (default 60), and how many recipients were delivered by then.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rcpts=${1:-1000000}
per=100
msgs=$((rcpts / per))
drain=${DRAIN_S:-60}
dir=${BENCH_DIR:-/var/tmp/volley-queue1m}
build=${VOLLEY_BUILD:-$top/build-bench}
"$top/tools/build.sh" "$build" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
rm -rf "$dir"
mkdir -p "$dir"
trap '"$top/tools/testnet.sh" down "$dir/net"; [ -f "$dir/pid" ] && kill "$(cat "$dir/pid")" 2>/dev/null || true' EXIT
"$top/tools/testnet.sh" up "$dir/net"
conf() {
    cat >"$dir/volley.conf" <<CONF
spool: { dir = "$dir/spool"; map_size_mb = 16384; };
inject: { unix_socket = ""; tcp_listen = [ "127.0.0.1:2531" ]; hostname = "q.bench";
          max_recipients = 1000; };
delivery: { enabled = $1; port = 2500; max_recipients_per_transaction = 100; };
dns: { servers = [ "127.0.0.1:5354" ]; };
control: { socket = "$dir/control.sock"; };
log: { dir = "$dir/log"; level = "notice"; };
daemon: { pid_file = "$dir/pid"; };
CONF
}
waitpid() { while kill -0 "$1" 2>/dev/null; do sleep 0.1; done; }

conf false
"$build/volleyd" -c "$dir/volley.conf"
echo "filling: $msgs messages x $per recipients"
/usr/bin/python3 "$top/bench/bulk-inject.py" 127.0.0.1:2531 "$msgs" "$per" \
    gmail.example,yahoo.example,small.example
pid=$(cat "$dir/pid")
kill "$pid"
waitpid "$pid"
du -sh "$dir/spool/data.mdb" | awk '{print "spool file: " $1}'

conf true
t0=$(date +%s.%N)
"$build/volleyd" -c "$dir/volley.conf"
pid=$(cat "$dir/pid")
first=""
end=$(($(date +%s) + drain))
while [ "$(date +%s)" -lt "$end" ]; do
    if [ -z "$first" ] && grep -q '"type":"delivered"' "$dir/log/accounting.log" 2>/dev/null; then
        first=$(/usr/bin/python3 -c "import sys,time; print('%.2f' % (time.time() - float(sys.argv[1])))" "$t0")
    fi
    sleep 0.05
done
hwm=$(awk '/VmHWM/ {print $2}' /proc/$pid/status)
anon=$(awk '/RssAnon/ {print $2}' /proc/$pid/status)
delivered=$(grep -c '"type":"delivered"' "$dir/log/accounting.log" || true)
printf 'recipients_queued=%d first_delivery_s=%s peak_rss_mb=%.0f anon_rss_mb=%.0f delivered_in_%ds=%d\n' \
    "$rcpts" "${first:-none}" "$(awk -v v="$hwm" 'BEGIN { print v / 1024 }')" "$(awk -v v="$anon" 'BEGIN { print v / 1024 }')" \
    "$drain" "$delivered"
