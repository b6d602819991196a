#!/bin/sh
# demo.sh - start volleyd with the shipped default configuration, inject a sample
# batch over the injection socket, show the queue with volleyctl, then remove the
# demo's messages and stop the daemon.  Needs root (the default config keeps its
# spool in /var/spool/volley and its sockets in /run/volley).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
build=${VOLLEY_BUILD:-$top/build}
conf=${VOLLEY_CONF:-$top/conf/volley.conf}
ctl() { "$build/volleyctl" -c "$conf" "$@"; }

if ctl status >/dev/null 2>&1; then
    echo "demo: a volleyd is already running on this configuration; stop it first" >&2
    exit 1
fi
echo "== starting volleyd -c $conf"
"$build/volleyd" -c "$conf"
stop() { kill "$(cat /run/volley/volleyd.pid)" 2>/dev/null || true; }
trap stop EXIT

campaign="demo-$(date +%s)"
echo "== injecting a sample batch (campaign $campaign)"
/usr/bin/python3 "$top/tools/inject-sample.py" --socket /run/volley/inject.sock \
    --messages 40 --campaign "$campaign"
echo "== volleyctl status"
ctl status
echo "== volleyctl queue --campaign $campaign"
ctl queue --campaign "$campaign"
echo "== volleyctl list --campaign $campaign --limit 5"
ctl list --campaign "$campaign" --limit 5
first=$(ctl list --json --campaign "$campaign" --limit 1 | sed -n 's/.*"id": *"\([0-9A-F]*\)".*/\1/p' | head -1)
echo "== volleyctl show $first"
ctl show "$first"
echo "== volleyctl verify"
ctl verify
echo "== removing the demo's messages"
ctl delete --campaign "$campaign"
echo "demo done"
