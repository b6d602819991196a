"""Crash safety: SIGKILL at random moments under load loses no acknowledged message
and never leaves half a message behind.

This is the most important test of the suite.  Set VOLLEY_CRASH_SEED to replay a run
(the seed is printed on failure)."""

import os
import queue
import random
import threading
import time

import pytest

from volley_harness import ConnectionClosed, QUEUED_RE, dot_stuff

N_MESSAGES = 300
N_CLIENTS = 8
MIN_KILLS = 4
MIN_WORK_S = 6.0      # messages are released over at least this long, so the kills land
BURST = 25
TEST_BUDGET_S = 55.0  # the whole test, start to finish


class Retry(Exception):
    pass


class Fatal(Exception):
    pass


def _make_messages(rng):
    msgs = []
    for i in range(N_MESSAGES):
        size = rng.randint(1024, 20 * 1024)
        token = "%d-%016x" % (i, rng.getrandbits(64))
        head = ("From: crash@example.org\r\nSubject: crash %d\r\nMessage-Id: <%s@test>\r\n\r\n"
                % (i, token)).encode()
        lines = [head]
        n = len(head)
        while n < size:
            k = rng.randint(0, 200)
            line = bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz0123456789 -_") for _ in range(k))
            if rng.random() < 0.05:
                line = b"." + line  # transparency matters
            lines.append(line + b"\r\n")
            n += len(line) + 2
        body = b"".join(lines)
        rcpts = ["u%d.%d@d%d.example" % (i, k, rng.randint(0, 9)) for k in range(rng.randint(1, 5))]
        sender = "" if i % 17 == 0 else "s%d@example.org" % i
        msgs.append((sender, rcpts, body))
    return msgs


def _transaction(conn, sender, rcpts, body):
    """One message on an open session; returns the id of the 250, raises Retry on any
    temporary failure or lost connection, Fatal on a permanent refusal."""
    def check(r, code, what):
        if r.code == code:
            return
        if 400 <= r.code < 500:
            raise Retry("%s: %s" % (what, r))
        raise Fatal("%s: %s" % (what, r))

    check(conn.cmd("MAIL FROM:<%s>" % sender), 250, "MAIL")
    for a in rcpts:
        check(conn.cmd("RCPT TO:<%s>" % a), 250, "RCPT")
    check(conn.cmd("DATA"), 354, "DATA")
    conn.send(dot_stuff(body) + b".\r\n")
    r = conn.read_reply()
    check(r, 250, "end of data")
    m = QUEUED_RE.match(r.lines[0])
    if not m:
        raise Fatal("250 without a queue id: %s" % r)
    return m.group(1).upper()


@pytest.mark.crash
def test_sigkill_under_load(volley_factory):
    seed = int(os.environ.get("VOLLEY_CRASH_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    t_start = time.monotonic()
    deadline = t_start + TEST_BUDGET_S - 12   # leave time for the checks
    v = volley_factory()
    msgs = _make_messages(rng)
    by_body = {body: i for i, (_, _, body) in enumerate(msgs)}
    assert len(by_body) == N_MESSAGES

    work = queue.Queue()
    for i in range(N_MESSAGES):
        work.put(i)
    acked = {}           # message index -> id of its 250
    problems = []
    lock = threading.Lock()
    daemon_lock = threading.Lock()   # the killer holds it while volleyd restarts
    clients_done = threading.Event()
    kills = []
    t0 = time.monotonic()

    def client(tid):
        crng = random.Random(seed * 31 + tid)
        unix = tid % 2 == 1
        conn = None
        try:
            while True:
                try:
                    i = work.get_nowait()
                except queue.Empty:
                    return
                # release messages in bursts of BURST spread over MIN_WORK_S, so the
                # kills find many transactions in flight but the load lasts
                wait = t0 + (i // BURST) * MIN_WORK_S * BURST / N_MESSAGES - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                sender, rcpts, body = msgs[i]
                tries = 0
                while True:
                    if time.monotonic() > deadline:
                        raise Fatal("message %d not acknowledged before the deadline" % i)
                    tries += 1
                    try:
                        if conn is None:
                            with daemon_lock:
                                pass  # do not hammer a daemon that is being restarted
                            conn = v.connect(unix=unix, timeout=5)
                            g = conn.read_reply()
                            if g.code != 220:
                                raise Retry("greeting %s" % g)
                            r = conn.cmd("EHLO crash%d.test" % tid)
                            if r.code != 250:
                                raise Retry("EHLO %s" % r)
                        msgid = _transaction(conn, sender, rcpts, body)
                        with lock:
                            acked[i] = msgid
                        break
                    except (Retry, OSError, ConnectionClosed, AssertionError):
                        if conn is not None:
                            conn.close()
                            conn = None
                        time.sleep(crng.uniform(0.01, 0.05))
                if crng.random() < 0.1 and conn is not None:  # sometimes a fresh session
                    conn.close()
                    conn = None
        except Fatal as e:
            with lock:
                problems.append("client %d: %s" % (tid, e))
        except Exception as e:  # noqa: BLE001 - report anything unexpected
            with lock:
                problems.append("client %d: unexpected %r" % (tid, e))
        finally:
            if conn is not None:
                conn.close()

    def killer():
        krng = random.Random(seed * 7)
        try:
            while not clients_done.is_set():
                time.sleep(krng.uniform(0.3, 1.0))
                if clients_done.is_set() or time.monotonic() > deadline:
                    return
                with daemon_lock:
                    v.kill9()
                    kills.append(time.monotonic() - t0)
                    v.start()
        except Exception as e:  # noqa: BLE001
            with lock:
                problems.append("killer: %r" % (e,))

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(N_CLIENTS)]
    kt = threading.Thread(target=killer, daemon=True)
    for t in threads:
        t.start()
    kt.start()
    for t in threads:
        t.join(max(1, deadline - time.monotonic() + 5))
    clients_done.set()
    kt.join(15)
    assert not kt.is_alive(), "killer thread stuck"
    assert not any(t.is_alive() for t in threads), "client threads stuck"
    ctx = "seed=%d kills at %s" % (seed, ["%.2f" % k for k in kills])
    assert not problems, "%s\n%s" % (ctx, "\n".join(problems[:20]))
    assert len(acked) == N_MESSAGES, ctx
    assert len(kills) >= MIN_KILLS, "only %d kills while clients ran (%s)" % (len(kills), ctx)
    if not v.running():
        v.start()

    # ---- every acknowledged message is there, exact
    listed = v.list()
    acked_ids = {}
    for i, msgid in acked.items():
        assert msgid not in acked_ids, "id %s acknowledged for two messages (%s)" % (msgid, ctx)
        acked_ids[msgid] = i
        sender, rcpts, body = msgs[i]
        assert msgid in listed, "acknowledged message %d (%s) lost (%s)" % (i, msgid, ctx)
        assert v.cat(msgid) == body, "message %d (%s) differs (%s)" % (i, msgid, ctx)
        s = v.show(msgid)
        assert s["sender"] == sender, ctx
        assert sorted(r["address"] for r in s["recipients"]) == sorted(rcpts), (i, msgid, ctx)
        assert listed[msgid]["size"] == len(body)

    # ---- anything else is a complete copy of a sent message (a duplicate from a
    # transaction whose 250 was lost with the process), never a fragment
    dups = 0
    for msgid in set(listed) - set(acked_ids):
        data = v.cat(msgid)
        assert data in by_body, "message %s in the spool is not any message sent (%d bytes; %s)" % (
            msgid, len(data), ctx)
        i = by_body[data]
        s = v.show(msgid)
        assert s["sender"] == msgs[i][0], ctx
        assert sorted(r["address"] for r in s["recipients"]) == sorted(msgs[i][1]), (
            "duplicate %s of message %d has other recipients (%s)" % (msgid, i, ctx))
        dups += 1
    assert dups <= len(kills) * N_CLIENTS, "%d duplicates for %d kills (%s)" % (
        dups, len(kills), ctx)

    print("crash test: %s; %d messages, %d duplicates, %d restarts"
          % (ctx, N_MESSAGES, dups, v.starts - 1))
    r = v.verify()
    assert r["violations"] == 0, "verify: %r (%s)" % (r, ctx)
    st = v.ctl({"cmd": "status"})
    assert st["queue"]["messages"] == len(listed), ctx
    assert st["queue"]["recipients"] == sum(m["recipients"] for m in listed.values()), ctx
    # ---- and after one more clean restart, still the same
    before = {msgid: v.cat(msgid) for msgid in listed}
    v.restart()
    assert {msgid: v.cat(msgid) for msgid in v.list()} == before, ctx
    assert time.monotonic() - t_start < 60, "crash test took %.1f s" % (time.monotonic() - t_start)


@pytest.mark.crash
def test_sigkill_during_bulk_change(volley_factory):
    """A hold or delete by domain is one transaction: killed at any moment, after the
    restart either every matching recipient changed or none did."""
    import json
    import socket
    rng = random.Random(int(os.environ.get("VOLLEY_CRASH_SEED", 4242)))
    v = volley_factory()
    n = 300
    with v.session() as c:
        for i in range(n):
            text = ("b" * 70 + "\r\n") * rng.randint(1, 40)
            body = ("Subject: bulk %d\r\n\r\n%s" % (i, text)).encode()
            r = c.send_message("s@example.org", ["a%d@bulk.example" % i, "k%d@keep.example" % i],
                               body)
            assert r.code == 250, r
    for op, field in (("hold", "held"), ("release", "queued"), ("delete", None)):
        before = v.queue(domain="bulk.example")["total"]["recipients"]
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(v.control_socket)
        s.sendall(json.dumps({"cmd": op, "domain": "bulk.example"}).encode() + b"\n")
        time.sleep(rng.uniform(0, 0.01))
        v.kill9()
        s.close()
        v.start()
        q = v.queue(domain="bulk.example")
        st = q["by_state"]
        if op == "delete":
            assert q["total"]["recipients"] in (0, before), q
        else:
            assert st[field] in (0, n) and st["queued"] + st["held"] == n, (op, q)
            if st[field] == 0:  # the kill won: apply it for real for the next round
                assert v.ctl({"cmd": op, "domain": "bulk.example"})["recipients"] == n
        assert v.queue(domain="keep.example")["total"]["recipients"] == n
        v.assert_consistent()
