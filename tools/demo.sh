#!/bin/bash
# demo.sh - the main job end to end: start a DNS server and receiving mail hosts on
# loopback (tools/testnet.sh), start volleyd with the shipped defaults plus the few
# settings that point it at that little world, inject a sample batch over the
# injection socket, wait until every recipient has an outcome, and print the
# delivered / deferred / bounced counts from the accounting log.  Then stop it all.
# Needs root only for binding 127.0.0.x addresses with smtp-sink's -u.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
build=${VOLLEY_BUILD:-$top/build}
dir=${DEMO_DIR:-/tmp/volley-demo}
msgs=${DEMO_MESSAGES:-60}

rm -rf "$dir"
mkdir -p "$dir"
cleanup() {
    [ -f "$dir/volleyd.pid" ] && kill "$(cat "$dir/volleyd.pid")" 2>/dev/null || true
    "$top/tools/testnet.sh" down "$dir/net" || true
}
trap cleanup EXIT

# the sending domain's authentication: an Ed25519 DKIM key whose public half the
# test DNS publishes, SPF for the loopback source, DMARC, and a PTR for the source
openssl genpkey -algorithm ED25519 -out "$dir/dkim-ed.pem" 2>/dev/null
dkim_txt=$("$build/dkim-sign" --dns-record "$dir/dkim-ed.pem" sender.example ed)
mkdir -p "$dir/net"
cat >"$dir/net/extra-dns.conf" <<CONF
txt-record=ed._domainkey.sender.example,"$dkim_txt"
txt-record=sender.example,"v=spf1 ip4:127.0.0.1 -all"
txt-record=_dmarc.sender.example,"v=DMARC1; p=quarantine; rua=mailto:dmarc@sender.example"
host-record=mta.sender.example,127.0.0.1
CONF

echo "== test network: DNS on 127.0.0.1:5354, mail hosts on 127.0.0.21-25:2500"
"$top/tools/testnet.sh" up "$dir/net"

# the shipped configuration, with paths and the test world swapped in
sed -e "s#\"/var/spool/volley\"#\"$dir/spool\"#" \
    -e "s#\"/run/volley/inject.sock\"#\"$dir/inject.sock\"#" \
    -e "s#\"/run/volley/control.sock\"#\"$dir/control.sock\"#" \
    -e "s#\"/var/log/volley\"#\"$dir/log\"#" \
    -e "s#\"/run/volley/volleyd.pid\"#\"$dir/volleyd.pid\"#" \
    -e "s#^    port = 25;#    port = 2500;#" \
    -e "s#^    retry_schedule = \"5m,10m,20m,40m,1h\";#    retry_schedule = \"1m\";#" \
    -e "s#^    servers = \[ \];#    servers = [ \"127.0.0.1:5354\" ];#" \
    -e "s#^    keys = \[ \];#    keys = [ \"sender.example:ed:$dir/dkim-ed.pem\" ];#" \
    -e "s#^    helo_name = \"\";#    helo_name = \"mta.sender.example\";#" \
    "$top/conf/volley.conf" >"$dir/volley.conf"
ctl() { "$build/volleyctl" -c "$dir/volley.conf" "$@"; }

echo "== starting volleyd -c $dir/volley.conf"
"$build/volleyd" -c "$dir/volley.conf"

echo "== injecting $msgs messages"
/usr/bin/python3 "$top/tools/inject-sample.py" --socket "$dir/inject.sock" \
    --messages "$msgs" --campaign demo --domains gmail.example,yahoo.example,outlook.example,corp.example,small.example,gone.example
want=$(ctl status --json | /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin)["inject"]["accepted_rcpts"])')

echo "== waiting for an outcome for each of the $want recipients"
acct="$dir/log/accounting.log"
for _ in $(seq 300); do
    have=$( (cat "$acct" 2>/dev/null || true) | wc -l)
    [ "$have" -ge "$want" ] && break
    sleep 0.1
done

echo "== outcomes (from $acct)"
/usr/bin/python3 - "$acct" <<'PY'
import collections, json, sys
by_type, by_domain = collections.Counter(), collections.defaultdict(collections.Counter)
for line in open(sys.argv[1]):
    r = json.loads(line)
    by_type[r["type"]] += 1
    by_domain[r["domain"]][r["type"]] += 1
print("  ".join(f"{t}: {n}" for t, n in sorted(by_type.items())))
print(f"{'DOMAIN':18} {'DELIVERED':>9} {'DEFERRED':>9} {'BOUNCED':>9}")
for d in sorted(by_domain):
    c = by_domain[d]
    print(f"{d:18} {c['delivered']:9} {c['deferred']:9} {c['bounced']:9}")
PY
echo "== one record of each kind (dkim: the signatures the message carried)"
for t in delivered deferred bounced; do grep -m1 "\"type\":\"$t\"" "$acct" || true; done
echo "== volleyctl check-domain sender.example (the sender's DKIM, SPF, DMARC and PTR, from the test DNS)"
ctl check-domain sender.example --selector ed --source 127.0.0.1
echo "== volleyctl report --by domain (deliverability, from the accounting log)"
ctl report --by domain
echo "== volleyctl suppress list (hard bounces are suppressed automatically)"
ctl suppress list --limit 10
echo "== volleyctl sites"
ctl sites
echo "== volleyctl queue (deferred recipients wait for their next try)"
ctl queue
echo "== mail hosts' own counts"
for f in "$dir"/net/sink-*.cnt; do
    printf '%s: %s\n' "$(basename "$f" .cnt)" "$(tr '\r' '\n' <"$f" | grep . | tail -1)"
done
echo "demo done"
