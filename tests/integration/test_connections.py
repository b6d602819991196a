"""Connection limit and memory per connection."""

import resource
import socket
import time

import pytest

from volley_harness import SMTPConn, expect, make_body, queued_id, vm_rss_kb


def _open_greeted(v, unix=False):
    c = v.connect(unix=unix, timeout=10)
    c.greeting()
    return c


def _expect_refused(v, unix=False):
    with v.connect(unix=unix, timeout=5) as c:
        expect(c.read_reply(), "421 4.7.0")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b""


def _open_when_slot_frees(v, deadline_s=3.0):
    """The daemon notices closed connections on its next loop turn: retry briefly."""
    deadline = time.monotonic() + deadline_s
    while True:
        c = v.connect(timeout=5)
        r = c.read_reply()
        if r.code == 220:
            return c
        c.close()
        assert time.monotonic() < deadline, "no slot freed: %s" % r
        time.sleep(0.05)


@pytest.mark.conf({"inject.max_connections": 50})
def test_connection_limit(volley):
    snap = volley.seed()
    conns = []
    try:
        for i in range(50):
            conns.append(_open_greeted(volley, unix=(i % 5 == 0)))  # both listeners count
        _expect_refused(volley)
        _expect_refused(volley, unix=True)
        st = volley.ctl({"cmd": "status"})
        assert st["inject"]["sessions"] == 50
        for c in conns[:10]:
            c.close()
        del conns[:10]
        for _ in range(10):
            conns.append(_open_when_slot_frees(volley))
        _expect_refused(volley)
        # the admitted connections all work
        for c in conns[-10:]:
            c.ehlo()
        msgid = queued_id(conns[-1].send_message("s@example.org", ["r@example.com"],
                                                 make_body("limit")))
    finally:
        for c in conns:
            c.close()
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {msgid}
    recs = [r for r in volley.log_records() if r.get("event") == "inject_limit"]
    assert recs, "refusals at max_connections should be logged"


def _raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(hard, max(soft, want))
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return soft, hard, target


@pytest.mark.conf({"inject.max_connections": 3000})
def test_two_thousand_connections(volley):
    n = 2000
    old_soft, hard, target = _raise_nofile(n + 500)
    if target < n + 100:
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))
        pytest.skip("RLIMIT_NOFILE hard limit %d too low" % hard)
    rss0 = vm_rss_kb(volley.pid)
    socks = []
    try:
        deadline = time.monotonic() + 60
        for i in range(n):
            assert time.monotonic() < deadline, "opening connections took too long (%d)" % i
            s = socket.create_connection(("127.0.0.1", volley.port), timeout=10)
            socks.append(s)
            # read the greeting of each before opening the next (bounded backlog)
            buf = b""
            while not buf.endswith(b"\r\n"):
                chunk = s.recv(256)
                assert chunk, "connection %d closed before its greeting" % i
                buf += chunk
            assert buf.startswith(b"220 "), "connection %d: %r" % (i, buf)
        st = volley.ctl({"cmd": "status"})
        assert st["inject"]["sessions"] == n
        # every session says EHLO, starts a message and sends 2 KB of its text: each
        # holds a little state and a partial message
        for s in socks:
            s.sendall(b"EHLO c.test\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\n"
                      b"DATA\r\n")
        conns = [SMTPConn(s, 10) for s in socks]
        for c in conns:
            expect(c.read_reply(), "250")
            expect(c.read_reply(), "250 2.1.0")
            expect(c.read_reply(), "250 2.1.5")
            expect(c.read_reply(), "354")
        partial = b"Subject: partial\r\n\r\n" + (b"p" * 98 + b"\r\n") * 20
        for s in socks:
            s.sendall(partial)
        time.sleep(0.5)
        rss = vm_rss_kb(volley.pid)
        per_conn = (rss - rss0) / n
        print("VmRSS %d kB at start, %d kB with %d sessions in DATA (%.1f kB each)"
              % (rss0, rss, n, per_conn))
        assert rss < 300 * 1024, "VmRSS %d kB with %d sessions" % (rss, n)
        assert per_conn < 100, "%.1f kB per session" % per_conn
        # finish a few of them: the sessions are really alive
        for c in conns[:20]:
            c.send(b".\r\n")
            queued_id(c.read_reply())
        # and a message still goes through on a new connection
        msgid = volley.inject("s@example.org", ["r@example.com"], make_body("2k"))
    finally:
        for s in socks:
            s.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (old_soft, hard))
    assert volley.cat(msgid) == make_body("2k")
    deadline = time.monotonic() + 10
    while volley.ctl({"cmd": "status"})["inject"]["sessions"] > 0:
        assert time.monotonic() < deadline, "sessions not released"
        time.sleep(0.1)
