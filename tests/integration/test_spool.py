"""The spool: full spool, restart, graceful stop, control-socket changes."""

import os
import random
import signal
import time

import pytest

from volley_harness import expect, make_body, queued_id


def _random_body(rng, i, size):
    head = "Subject: spool %d\r\nMessage-Id: <%d.%d@test>\r\n\r\n" % (i, i, rng.getrandbits(48))
    out = [head.encode()]
    n = len(out[0])
    while n < size:
        line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 .-") for _ in range(
            rng.randint(0, 120)))
        out.append(line + b"\r\n")
        n += len(line) + 2
    return b"".join(out)


# ---------------------------------------------------------------- spool full

@pytest.mark.conf({"spool.map_size_mb": 2, "spool.reserve_percent": 5})
def test_spool_full(volley):
    rng = random.Random(13)
    acked = {}
    full_reply = None
    with volley.session() as c:
        for i in range(80):
            body = _random_body(rng, i, 100 * 1024)
            r = c.send_message("s@example.org", ["r%d@full.example" % i], body)
            if r.code == 452:
                full_reply = r
                break
            acked[queued_id(r)] = body
        assert full_reply is not None, "2 MiB spool took %d messages of 100 KB" % len(acked)
        expect(full_reply, "452 4.3.1")
        assert 5 <= len(acked) <= 19, "%d messages of 100 KB in a 2 MiB map" % len(acked)
        # the session survives a full spool
        expect(c.cmd("NOOP"), "250 2.0.0")
        # still full for the next one
        expect(c.send_message("s@example.org", ["again@full.example"],
                              _random_body(rng, 999, 100 * 1024)), "452 4.3.1")
    for msgid, body in acked.items():
        assert volley.cat(msgid) == body
    volley.assert_consistent()
    recs = [r for r in volley.log_records() if r.get("event") == "spool_refused"]
    assert recs and recs[0]["level"] == "warning" and recs[0]["reason"] == "spool full"

    # deletes still work on a full spool, and give the space back
    victims = list(acked)[:4]
    for msgid in victims:
        r = volley.ctl({"cmd": "delete", "id": msgid})
        assert r == {"ok": True, "recipients": 1, "messages": 1}, r
        del acked[msgid]
    with volley.session() as c:
        for i in range(2):
            body = _random_body(rng, 1000 + i, 100 * 1024)
            acked[queued_id(c.send_message("s@example.org", ["new%d@full.example" % i],
                                           body))] = body
    # small holds and releases work when full, too
    listed = volley.list()
    assert set(listed) == set(acked)
    for msgid, body in acked.items():
        assert volley.cat(msgid) == body
        assert listed[msgid]["size"] == len(body)
    volley.assert_consistent()
    st = volley.ctl({"cmd": "status"})
    assert st["spool"]["map_bytes"] == 2 * 1024 * 1024


@pytest.mark.conf({"spool.map_size_mb": 2, "spool.reserve_percent": 5})
def test_spool_full_keeps_holds_working(volley):
    rng = random.Random(7)
    acked = {}
    with volley.session() as c:
        for i in range(80):
            r = c.send_message("s@example.org", ["a%d@hold.example" % i, "b%d@other.example" % i],
                               _random_body(rng, i, 100 * 1024))
            if r.code != 250:
                expect(r, "452 4.3.1")
                break
            acked[queued_id(r)] = True
    r = volley.ctl({"cmd": "hold", "domain": "hold.example"})
    assert r == {"ok": True, "recipients": len(acked), "messages": len(acked)}, r
    q = volley.queue()
    assert q["by_state"]["held"] == len(acked)
    r = volley.ctl({"cmd": "release", "domain": "HOLD.example"})
    assert r["ok"] and r["recipients"] == len(acked)
    assert volley.queue()["by_state"] == {"queued": 2 * len(acked), "deferred": 0, "held": 0}
    volley.assert_consistent()


# ---------------------------------------------------------------- restart

def test_restart_keeps_everything(volley):
    rng = random.Random(14)
    sent = {}
    with volley.session() as c:
        for i in range(25):
            size = rng.choice([200, 5000, 60000, 300000])
            rcpts = ["r%d.%d@Dom%d.Example" % (i, k, k % 3) for k in range(rng.randint(1, 4))]
            camp = ["X-Volley-Campaign: camp-%d" % (i % 3)] if i % 2 else []
            body = _random_body(rng, i, size)
            if camp:
                body = (camp[0] + "\r\n").encode() + body
            msgid = queued_id(c.send_message("s%d@example.org" % i, rcpts, body))
            stored = body[len(camp[0]) + 2:] if camp else body
            sent[msgid] = (stored, rcpts, "camp-%d" % (i % 3) if camp else "")
    r = volley.ctl({"cmd": "hold", "id": list(sent)[3]})
    assert r["ok"] and r["messages"] == 1
    before = volley.snapshot()
    queue_before = volley.queue()
    rc = volley.stop()
    assert rc == 0
    assert not os.path.exists(volley.unix_socket), "unix socket left behind after SIGTERM"
    assert not os.path.exists(volley.settings["daemon.pid_file"]), "pid file left behind"
    volley.start()
    after = volley.snapshot()
    assert after == before
    assert volley.queue() == queue_before
    for msgid, (body, rcpts, camp) in sent.items():
        assert after[msgid][0] == body
        assert after[msgid][2] == camp
        assert after[msgid][3] == [a.split("@")[0] + "@" + a.split("@")[1].lower() for a in rcpts]
    assert volley.show(list(sent)[3])["recipients"][0]["state"] == "held"
    volley.assert_consistent()
    # ids keep increasing across the restart
    new = volley.inject("s@example.org", ["r@example.com"], make_body("after restart"))
    assert new not in sent and new > max(sent)


def test_restart_twice_quickly(volley):
    a = volley.inject("s@example.org", ["r@example.com"], make_body("one"))
    volley.restart()
    volley.restart()
    assert volley.cat(a) == make_body("one")
    b = volley.inject("s@example.org", ["r@example.com"], make_body("two"))
    assert b > a


def test_sigterm_during_data(volley):
    """SIGTERM while a client is in DATA: that client is told 421 and its message is
    not stored; a client waiting between commands is told 421 too; exit status 0."""
    snap = volley.seed()
    c1 = volley.session()
    c2 = volley.session()
    try:
        expect(c1.mail("s@example.org"), "250 2.1.0")
        expect(c1.rcpt("r@example.com"), "250 2.1.5")
        expect(c1.cmd("DATA"), "354")
        c1.send(b"Subject: half\r\n\r\nhalf a mess")
        time.sleep(0.1)
        volley.signal(signal.SIGTERM)
        expect(c1.read_reply(), "421 4.3.2")
        expect(c2.read_reply(), "421 4.3.2")
        assert volley.proc.wait(10) == 0
    finally:
        c1.close()
        c2.close()
    volley.start()
    volley.assert_intact(snap)


def test_sigterm_refuses_new_connections_quickly(volley):
    """After SIGTERM the listeners close at once: the daemon exits within a second
    when no client is connected."""
    t0 = time.monotonic()
    assert volley.stop() == 0
    assert time.monotonic() - t0 < 2


# ---------------------------------------------------------------- control socket changes

def test_hold_release_delete_by_selector(volley):
    ids = {}
    ids["a"] = volley.inject("s@example.org", ["x@one.example", "y@two.example"],
                             make_body("a", extra_headers=["X-Volley-Campaign: c1"]))
    ids["b"] = volley.inject("s@example.org", ["z@one.example"],
                             make_body("b", extra_headers=["X-Volley-Campaign: c2"]))
    ids["c"] = volley.inject("s@example.org", ["w@two.example"], make_body("c"))

    assert volley.ctl({"cmd": "hold", "domain": "ONE.example"}) == {
        "ok": True, "recipients": 2, "messages": 2}
    q = volley.queue()
    assert q["by_state"] == {"queued": 2, "deferred": 0, "held": 2}
    assert q["by_domain"]["one.example"] == {"queued": 0, "deferred": 0, "held": 2}
    assert volley.ctl({"cmd": "status"})["queue"] == {"messages": 3, "recipients": 4, "due": 2}
    # holding again changes nothing
    assert volley.ctl({"cmd": "hold", "domain": "one.example"})["recipients"] == 0
    assert volley.ctl({"cmd": "release", "campaign": "c1"}) == {
        "ok": True, "recipients": 1, "messages": 1}
    assert volley.queue(campaign="c1")["by_state"] == {"queued": 2, "deferred": 0, "held": 0}
    assert volley.ctl({"cmd": "hold", "id": ids["c"]}) == {
        "ok": True, "recipients": 1, "messages": 1}
    st = volley.ctl({"cmd": "status"})
    assert st["queue"] == {"messages": 3, "recipients": 4, "due": 2}
    # delete one recipient domain: message a keeps its other recipient
    assert volley.ctl({"cmd": "delete", "domain": "one.example"}) == {
        "ok": True, "recipients": 2, "messages": 1}
    assert set(volley.list()) == {ids["a"], ids["c"]}
    assert [r["address"] for r in volley.show(ids["a"])["recipients"]] == ["y@two.example"]
    assert volley.ctl({"cmd": "delete", "campaign": "c1"}) == {
        "ok": True, "recipients": 1, "messages": 1}
    assert volley.ctl({"cmd": "delete", "id": ids["c"]}) == {
        "ok": True, "recipients": 1, "messages": 1}
    assert volley.list() == {}
    assert volley.ctl({"cmd": "delete", "id": ids["c"]}) == {
        "ok": True, "recipients": 0, "messages": 0}
    st = volley.ctl({"cmd": "status"})
    assert st["queue"] == {"messages": 0, "recipients": 0, "due": 0}
    volley.assert_consistent()


def test_ctl_bad_requests(volley):
    snap = volley.seed()
    bad = [
        {"cmd": "nope"},
        {},
        {"cmd": "show"},
        {"cmd": "show", "id": "xyz"},
        {"cmd": "show", "id": "0123456789abcdeg"},
        {"cmd": "cat", "id": "00000000000000001"},
        {"cmd": "hold"},
        {"cmd": "hold", "id": list(snap)[0], "domain": "seed.example"},
        {"cmd": "delete", "domain": ""},
        {"cmd": "delete", "campaign": "x" * 300},
    ]
    for req in bad:
        r = volley.ctl(req)
        assert r["ok"] is False and isinstance(r["error"], str) and r["error"], (req, r)
        assert "\n" not in r["error"]
    r = volley.ctl({"cmd": "show", "id": "0123456789ABCDEF"})
    assert r == {"ok": False, "error": "0123456789ABCDEF: no such message"}
    # not JSON, and several requests on one connection answered in order
    import json
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(volley.control_socket)
    s.sendall(b"this is not json\n{\"cmd\":\"verify\"}\n{\"cmd\":\"hold\",\"domain\":\"seed.example\"}\n"
              b"{\"cmd\":\"release\",\"domain\":\"seed.example\"}\n{\"cmd\":\"status\"}\n")
    buf = b""
    while buf.count(b"\n") < 5:
        chunk = s.recv(65536)
        assert chunk
        buf += chunk
    s.close()
    replies = [json.loads(l) for l in buf.split(b"\n")[:5]]
    assert replies[0]["ok"] is False
    assert replies[1]["ok"] and replies[1]["violations"] == 0
    assert replies[2] == {"ok": True, "recipients": 4, "messages": 3}
    assert replies[3] == {"ok": True, "recipients": 4, "messages": 3}
    assert replies[4]["ok"] and replies[4]["queue"]["due"] == 4
    volley.assert_intact(snap)


def test_ctl_request_line_limit(volley):
    """ctl.h: a request line is at most 64 KiB.  One of exactly 64 KiB is answered; a
    longer one gets {"ok":false,"error":...} (then the connection may close), and the
    daemon keeps serving."""
    import json
    import socket

    def exchange(payload):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(5)
        s.connect(volley.control_socket)
        got = b""
        try:
            s.sendall(payload)
            while b"\n" not in got:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, BrokenPipeError):
            pass
        finally:
            s.close()
        return got

    base = b'{"cmd":"status","pad":""}'
    ok = base[:-2] + b"x" * (65536 - len(base)) + b'"}'
    assert len(ok) == 65536
    r = json.loads(exchange(ok + b"\n").split(b"\n")[0])
    assert r["ok"] is True
    got = exchange(base[:-2] + b"x" * 70000 + b'"}\n')
    assert got, "no reply to an over-long request (connection dropped silently)"
    r = json.loads(got.split(b"\n")[0])
    assert r["ok"] is False and "too long" in r["error"]
    assert volley.ctl({"cmd": "status"})["ok"]
