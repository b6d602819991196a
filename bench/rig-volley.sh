#!/bin/bash
# rig-volley.sh start|stop - the rig adapter (../shared/rig/run.sh takes it by path):
# volleyd listening on $INJECT_ADDR:$INJECT_PORT, delivering by MX lookup (the
# namespace's resolv.conf points at the rig's dnsmasq) to port 25, spool, config and
# logs under $WORK.  volleyd runs in the foreground as a child, so the rig's reaper
# accounts for it.  VOLLEY_BIN overrides the binary (default build-bench/volleyd);
# VOLLEY_RULES names a shaping rules file (default: none, the built-in rules);
# VOLLEY_DKIM a signing key entry "domain:selector:/path/key.pem" (default: none);
# VOLLEY_SPOOL_OPTS, VOLLEY_DELIVERY_OPTS and VOLLEY_DKIM_OPTS settings added to those
# groups.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${VOLLEY_BIN:-$here/../build-bench/volleyd}
case $1 in
start)
    dkim_keys=""
    [ -n "${VOLLEY_DKIM:-}" ] && dkim_keys="\"$VOLLEY_DKIM\""
    cat >"$WORK/volley.conf" <<CONF
spool: { dir = "$WORK/spool"; map_size_mb = 16384; ${VOLLEY_SPOOL_OPTS:-} };
inject: { unix_socket = ""; tcp_listen = [ "$INJECT_ADDR:$INJECT_PORT" ];
          hostname = "volley.bench"; max_connections = 2000; };
delivery: { ${VOLLEY_DELIVERY_OPTS:-} };
control: { socket = "$WORK/control.sock"; };
log: { dir = "$WORK/log"; level = "notice"; };
daemon: { pid_file = "$WORK/volleyd.pid"; };
shaping: { rules_file = "${VOLLEY_RULES:-}"; };
dkim: { keys = [ $dkim_keys ]; ${VOLLEY_DKIM_OPTS:-} };
CONF
    nohup "$bin" -c "$WORK/volley.conf" --foreground >"$WORK/volleyd.out" 2>&1 &
    echo $! >"$WORK/volleyd.bgpid"
    ;;
stop)
    kill "$(cat "$WORK/volleyd.bgpid")" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
