"""max_inflight_mb backpressure: reading pauses while too many message bytes are
buffered, but every message within max_message_size is still accepted."""

import os
import threading
import time

import pytest

from volley_harness import dot_stuff, expect, make_body, queued_id


def _big_body(tag, size):
    lines = ["%s %07d %s" % (tag, i, "b" * 60) for i in range(size // 78 + 1)]
    return make_body(tag, body_lines=lines)


@pytest.mark.conf({"inject.max_inflight_mb": 1, "inject.max_message_size": 4194304,
                   "inject.timeout_data": 8})
def test_message_larger_than_inflight_budget(volley):
    """A single 2 MB message with a 1 MiB in-flight budget: the session must not wait
    for memory that only its own completion can free."""
    body = _big_body("single", 2 * 1024 * 1024)
    with volley.session(timeout=15) as c:
        r = c.send_message("s@example.org", ["r@example.com"], body)
        assert r.code != 421, "session stalled on its own in-flight bytes: %s" % r
        msgid = queued_id(r)
    assert volley.cat(msgid) == body


@pytest.mark.conf({"inject.max_inflight_mb": 2, "inject.max_message_size": 1048576,
                   "inject.timeout_data": 20})
def test_many_sessions_share_inflight_budget(volley):
    """Eight clients each sending three 700 KB messages through a 2 MiB budget: all 24
    are accepted (sessions are paused and resumed, none starves or deadlocks)."""
    results, errors = {}, []
    lock = threading.Lock()

    def client(t):
        try:
            with volley.session(timeout=30) as c:
                for k in range(3):
                    body = _big_body("t%d.%d" % (t, k), 700 * 1024)
                    msgid = queued_id(c.send_message("s@example.org", ["r%d@x.example" % t],
                                                     body))
                    with lock:
                        results[msgid] = body
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append("client %d: %r" % (t, e))

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads), "clients stuck"
    assert not errors, errors
    assert len(results) == 24
    for msgid, body in results.items():
        assert volley.cat(msgid) == body
    volley.assert_consistent()


@pytest.mark.conf({"inject.max_inflight_mb": 2, "inject.max_message_size": 4194304,
                   "inject.timeout_data": 6})
def test_partial_messages_filling_budget_do_not_deadlock(volley):
    """Two clients each send the first 1.2 MB of a message, then the rest.  Together
    their partial messages fill the 2 MiB budget; neither can finish unless the daemon
    lets one of them through.  Both must be accepted."""
    bodies = [_big_body("p%d" % k, 1536 * 1024) for k in range(2)]
    conns = [volley.session(timeout=15) for _ in range(2)]
    try:
        for k, c in enumerate(conns):
            expect(c.mail("s@example.org"), "250 2.1.0")
            expect(c.rcpt("r%d@example.com" % k), "250 2.1.5")
            expect(c.cmd("DATA"), "354")
        wires = [dot_stuff(b) + b".\r\n" for b in bodies]
        cut = 1200 * 1024
        for c, w in zip(conns, wires):
            c.send(w[:cut])
        time.sleep(0.5)
        senders = [threading.Thread(target=c.send, args=(w[cut:],), daemon=True)
                   for c, w in zip(conns, wires)]
        for t in senders:
            t.start()
        replies = [c.read_reply() for c in conns]
        for t in senders:
            t.join(5)
    finally:
        for c in conns:
            c.close()
    for k, r in enumerate(replies):
        assert r.code != 421, "client %d starved: %s" % (k, r)
        assert volley.cat(queued_id(r)) == bodies[k]


def _rss_anon_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    return 0


@pytest.mark.skipif(os.environ.get("VOLLEY_SANITIZE") == "1",
                    reason="ASan's quarantine keeps freed memory resident; the bound is "
                           "checked in the plain build")
@pytest.mark.conf({"inject.max_inflight_mb": 4, "inject.max_message_size": 10485760,
                   "inject.timeout_data": 30})
def test_inflight_budget_bounds_memory(volley):
    """16 clients send an 8 MB message each at the same time (128 MB in all).  With a
    4 MiB budget the daemon's anonymous memory must stay far below what buffering
    everything would take (documented bound: max_inflight_mb plus one message over it,
    plus per-session read buffers)."""
    n, size = 16, 8 * 1024 * 1024
    body = _big_body("mem", size)
    wire = dot_stuff(body) + b".\r\n"
    base = _rss_anon_kb(volley.pid)
    peak = [base]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_anon_kb(volley.pid))
            time.sleep(0.02)

    results, errors = [], []
    lock = threading.Lock()

    def client(t):
        try:
            with volley.session(timeout=60) as c:
                expect(c.mail("s@example.org"), "250 2.1.0")
                expect(c.rcpt("r%d@example.com" % t), "250 2.1.5")
                expect(c.cmd("DATA"), "354")
                c.send(wire)
                r = c.read_reply()
                with lock:
                    results.append(queued_id(r))
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append("client %d: %r" % (t, e))

    st = threading.Thread(target=sampler, daemon=True)
    st.start()
    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    done.set()
    st.join(2)
    assert not errors, errors
    assert len(results) == n
    grown_mb = (peak[0] - base) / 1024
    print("RssAnon grew by %.1f MB while %d x %d MB were injected" % (grown_mb, n, size >> 20))
    assert grown_mb < 64, "RssAnon grew by %.1f MB with a 4 MiB in-flight budget" % grown_mb
    assert volley.cat(results[0]) == body
