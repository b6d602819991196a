#!/bin/bash
# shaping.sh [MSGS] - traffic shaping on ../shared/rig: the end-to-end run with rules
# that limit two "big provider" sites to fixed message rates while the rest stay
# unlimited, then the same plan with no rules.  Sites are receiving hosts (sets of
# MX addresses): "biga" is 127.0.0.10, which takes d0001-d0003 (mx.biga.test, 32%
# of the plan) and every eighth other domain; "bigb" is 127.0.0.11+12, which takes
# d0004-d0005 (mx1/mx2.bigb.test, 8%).  From volleyd's accounting log it prints,
# per limited site, the delivery rate it kept (messages 2..N over their span: the
# first rides the bucket's burst) against the limit, and for the unlimited sites
# their delivery rate in both runs (a throttled provider must not hold up the
# rest).  Default MSGS 20000; BIGA_RATE (400) and BIGB_RATE (100) set the limits in
# messages per second.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
rig=${RIG:-$top/../shared/rig}
msgs=${1:-20000}
biga=${BIGA_RATE:-400} bigb=${BIGB_RATE:-100}
"$top/tools/build.sh" "$top/build-bench" -DCMAKE_BUILD_TYPE=Release -DVOLLEY_TESTS=OFF >/dev/null
"$rig/setup.sh" >/dev/null
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat >"$tmp/rules.conf" <<RULES
rules = (
    { name = "biga"; match = [ "mx:mx.biga.test" ]; message_rate = "$biga/s"; },
    { name = "bigb"; match = [ "mx:mx?.bigb.test" ]; message_rate = "$bigb/s"; }
);
RULES
work=/tmp/mtabench/mta/rig-volley
VOLLEY_RULES=$tmp/rules.conf "$rig/run.sh" "$top/bench/rig-volley.sh" "$msgs" | tee "$tmp/shaped.out"
cp "$work/log/accounting.log" "$tmp/shaped.acct"
"$rig/run.sh" "$top/bench/rig-volley.sh" "$msgs" | tee "$tmp/plain.out"
cp "$work/log/accounting.log" "$tmp/plain.acct"
/usr/bin/python3 - "$tmp" "$biga" "$bigb" <<'PY'
import json, sys
from datetime import datetime
tmp, biga, bigb = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
BIGB = {"d0004.test", "d0005.test"}


def site_of(r):
    if r["domain"] in BIGB:
        return "bigb"
    return "biga" if r["ip"] == "127.0.0.10" else "unlimited"


def times(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("type") != "delivered":
                continue
            t = datetime.strptime(r["ts"], "%Y-%m-%dT%H:%M:%S.%fZ").timestamp()
            out.setdefault(site_of(r), []).append(t)
    return {k: sorted(v) for k, v in out.items()}


def rate(ts):
    return (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0

shaped, plain = times(tmp + "/shaped.acct"), times(tmp + "/plain.acct")
print("\n%-10s %8s %10s %12s %8s" % ("site", "limit/s", "delivered", "kept msgs/s", "of limit"))
for name, limit in (("biga", biga), ("bigb", bigb)):
    ts = shaped.get(name, [])
    r = rate(ts)
    print("%-10s %8.0f %10d %12.1f %7.1f%%" % (name, limit, len(ts), r, 100 * r / limit))
u_s, u_p = shaped.get("unlimited", []), plain.get("unlimited", [])
start_s = min(min(v) for v in shaped.values())
start_p = min(min(v) for v in plain.values())
print("\n%-22s %10s %14s %16s" % ("unlimited sites", "delivered", "msgs/s", "done after s"))
print("%-22s %10d %14.0f %16.2f" % ("with shaping", len(u_s), rate(u_s), u_s[-1] - start_s))
print("%-22s %10d %14.0f %16.2f" % ("no rules", len(u_p), rate(u_p), u_p[-1] - start_p))
print("unlimited rate with shaping / without: %.2f" % (rate(u_s) / rate(u_p)))
PY
