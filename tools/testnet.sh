#!/bin/bash
# testnet.sh up DIR | down DIR - a small mail world on loopback for the demo and for
# manual testing: dnsmasq answering for *.example on 127.0.0.1:${DNS_PORT:-5354}, and
# Postfix smtp-sink receiving mail hosts on 127.0.0.21-.25 port ${MX_PORT:-2500}:
#   gmail.example    MX mx.gmail.example              127.0.0.21  accepts
#   yahoo.example    MX mx1/mx2.yahoo.example (equal) 127.0.0.22, .23  accept
#   outlook.example  MX mx.outlook.example            127.0.0.24  450 to RCPT (defer)
#   corp.example     MX mx.corp.example               127.0.0.25  550 to RCPT (bounce)
#   small.example    no MX, A 127.0.0.21              (implicit MX)
#   anything else under .example: NXDOMAIN
# Each sink counts what it received in DIR/sink-ADDR.cnt (smtp-sink -c).  Extra
# dnsmasq lines (e.g. the demo's DKIM, SPF and DMARC records for sender.example) go
# in DIR/extra-dns.conf before "up".
set -euo pipefail
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 up|down DIR" >&2; exit 2; }
dns_port=${DNS_PORT:-5354}
mx_port=${MX_PORT:-2500}

case $cmd in
up)
    mkdir -p "$dir"
    cat >"$dir/dnsmasq.conf" <<CONF
port=$dns_port
listen-address=127.0.0.1
bind-interfaces
no-resolv
no-hosts
local=/example/
cache-size=0
host-record=mx.gmail.example,127.0.0.21
host-record=mx1.yahoo.example,127.0.0.22
host-record=mx2.yahoo.example,127.0.0.23
host-record=mx.outlook.example,127.0.0.24
host-record=mx.corp.example,127.0.0.25
host-record=small.example,127.0.0.21
mx-host=gmail.example,mx.gmail.example,10
mx-host=yahoo.example,mx1.yahoo.example,10
mx-host=yahoo.example,mx2.yahoo.example,10
mx-host=outlook.example,mx.outlook.example,10
mx-host=corp.example,mx.corp.example,10
CONF
    [ -f "$dir/extra-dns.conf" ] && cat "$dir/extra-dns.conf" >>"$dir/dnsmasq.conf"
    dnsmasq -C "$dir/dnsmasq.conf" --keep-in-foreground --user=root \
        --pid-file="$dir/dnsmasq.pid" >"$dir/dnsmasq.log" 2>&1 &
    echo $! >"$dir/dnsmasq.bgpid"
    sinks="21 22 23 24 25" # last octets of the sinks' addresses
    for a in $sinks; do
        opts=""
        [ $a = 24 ] && opts="-r RCPT"
        [ $a = 25 ] && opts="-f RCPT"
        # shellcheck disable=SC2086
        smtp-sink -c -u nobody $opts 127.0.0.$a:$mx_port 256 >"$dir/sink-127.0.0.$a.cnt" \
            2>"$dir/sink-127.0.0.$a.err" &
        echo $! >"$dir/sink-127.0.0.$a.pid"
    done
    for _ in $(seq 50); do
        dig +short +time=1 +tries=1 -p "$dns_port" @127.0.0.1 MX gmail.example 2>/dev/null |
            grep -q mx && break
        sleep 0.1
    done
    # A DNS server or sink left over from another run keeps the port: ours then
    # exits at once, and the other one would answer without this run's records
    sleep 0.2
    failed=""
    kill -0 "$(cat "$dir/dnsmasq.bgpid")" 2>/dev/null ||
        failed="dnsmasq on 127.0.0.1:$dns_port ($(tail -1 "$dir/dnsmasq.log"))"
    for a in $sinks; do
        kill -0 "$(cat "$dir/sink-127.0.0.$a.pid")" 2>/dev/null ||
            failed="$failed${failed:+, }smtp-sink on 127.0.0.$a:$mx_port ($(tail -1 "$dir/sink-127.0.0.$a.err"))"
    done
    if [ -n "$failed" ]; then
        echo "testnet: did not start: $failed; is another test network still up?" >&2
        "$0" down "$dir"
        exit 1
    fi
    ;;
down)
    for f in "$dir"/sink-*.pid "$dir"/dnsmasq.bgpid; do
        [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true
        rm -f "$f"
    done
    ;;
*)
    echo "usage: $0 up|down DIR" >&2
    exit 2
    ;;
esac
