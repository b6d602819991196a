"""Logs: JSON lines, reopened on SIGHUP and on `log_rotate`."""

import os
import signal
import time

import pytest

from volley_harness import make_body, queued_id


def _wait_for(pred, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.05)
    return False


def test_log_is_json_lines(volley):
    recs = volley.log_records()
    assert recs, "no log records after start"
    for r in recs:
        assert r.get("level") in ("debug", "info", "notice", "warning", "error"), r
        assert isinstance(r.get("ts"), str) and r["ts"].endswith("Z")
        assert isinstance(r.get("event"), str)
    started = [r for r in recs if r["event"] == "started"]
    assert started and started[-1]["pid"] == volley.pid


@pytest.mark.conf({"log.level": "debug"})
def test_sighup_reopens_log(volley):
    log = volley.log_path
    old = log.with_name("volleyd.log.1")
    a = volley.inject("s@example.org", ["r@example.com"], make_body("before"))
    os.rename(log, old)
    volley.signal(signal.SIGHUP)
    assert _wait_for(log.exists), "no new volleyd.log after SIGHUP"
    b = volley.inject("s@example.org", ["r@example.com"], make_body("after"))
    assert _wait_for(lambda: any(r.get("msgid") == b for r in volley.log_records(log)))
    new_recs = volley.log_records(log)
    old_recs = volley.log_records(old)
    assert any(r.get("event") == "queued" and r.get("msgid") == a for r in old_recs)
    assert not any(r.get("msgid") == b for r in old_recs), "old file still written"
    assert any(r.get("event") == "queued" and r.get("msgid") == b for r in new_recs)
    assert any(r.get("event") == "log_reopen" for r in new_recs)
    # the accounting log is reopened too
    assert (log.parent / "accounting.log").exists()
    # and the daemon is otherwise unaffected
    assert volley.cat(a) == make_body("before") and volley.cat(b) == make_body("after")


def test_log_rotate_command(volley):
    log = volley.log_path
    os.rename(log, log.with_name("volleyd.log.1"))
    assert volley.ctl({"cmd": "log_rotate"}) == {"ok": True}
    assert log.exists()
    # an info-level record lands in the new file
    with volley.session() as c:
        c.cmd("XYZZY")
    assert _wait_for(lambda: any(r.get("event") == "inject_reject"
                                 for r in volley.log_records(log)))


def test_rejects_are_logged(volley):
    with volley.session() as c:
        c.cmd("MAIL FROM:<bad")
    recs = [r for r in volley.log_records() if r.get("event") == "inject_reject"]
    assert recs and recs[-1]["reply"].startswith("501 5.1.7") and recs[-1]["stage"] == "mail"
    assert recs[-1]["client"] == "127.0.0.1"


@pytest.mark.parametrize("unix", [False, True])
def test_first_connection_after_start_is_served(volley_factory, unix):
    """The very first injection connection after start-up gets its greeting and works
    (normally the fixture's TCP readiness probe is that first connection; here only
    the control socket is probed)."""
    v = volley_factory(start=False)
    v.start(probe_tcp=False)
    with v.connect(unix=unix) as c:
        c.greeting()
        c.ehlo()
        body = make_body("first")
        r = c.send_message("s@example.org", ["r@example.com"], body)
        msgid = queued_id(r)
    assert v.cat(msgid) == body
