"""Delivery: temporary failures, retries, volleyctl retry, restart, expiry."""

import calendar
import time
from collections import Counter

import pytest

from mailnet import acct_records, inject_many, message_id_header, wait_acct, wait_final
from volley_harness import make_body

SENDER = "bulk-sender@example.org"


def _parse_ts(text):
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%SZ"))


def test_temporary_failure_then_success(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.soft.test": "127.0.0.2"}, mx=[("soft.test", "mx.soft.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.soft.test")
    host.handler.rcpt_script = lambda addr, n: (
        "451 4.3.0 <%s>: Temporary lookup failure" % addr if n == 1 else None)
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "2s"}))
    msgid = v.inject(SENDER, ["x@soft.test"], make_body("soft"))
    t0 = time.time()
    d = wait_acct(v, lambda r: r["msgid"] == msgid and r["type"] == "deferred")[0]
    # between the attempts: show says deferred, 1 attempt, the reply
    s = v.show(msgid)
    assert len(s["recipients"]) == 1
    rc = s["recipients"][0]
    assert rc["state"] == "deferred" and rc["attempts"] == 1, s
    assert "451" in rc["last_reply"] and "4.3.0" in rc["last_reply"], s
    assert d["attempt"] == 1 and d["code"] == 451 and d["enh"] == "4.3.0", d
    assert "Temporary lookup failure" in d["diag"], d
    assert d["mx"] == "mx.soft.test" and d["ip"] == "127.0.0.2", d
    nxt = _parse_ts(d["next_attempt"])
    assert t0 - 1 <= nxt <= t0 + 5, (d["next_attempt"], t0)
    assert _parse_ts(rc["next_attempt"]) == nxt, (rc, d)

    recs = wait_final(v, [(msgid, "x@soft.test")], timeout=10)[(msgid, "x@soft.test")]
    assert [r["type"] for r in recs] == ["deferred", "delivered"], recs
    assert recs[1]["attempt"] == 2 and recs[1]["code"] == 250, recs
    assert "next_attempt" not in recs[1]
    assert host.handler.rcpt_seen["x@soft.test"] == 2
    assert [e.rcpt_tos for e in host.envelopes] == [["x@soft.test"]]
    assert v.list() == {}


def test_transaction_4xx_defers_every_recipient(mailnet, volley_factory):
    # a 4xx to the final dot concerns the whole transaction
    mailnet.start_dns(hosts={"mx.soft.test": "127.0.0.2"}, mx=[("soft.test", "mx.soft.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.soft.test")
    host.handler.data_script = lambda env, n: (
        "452 4.3.1 Insufficient system storage" if n == 1 else None)
    v = volley_factory(mailnet.settings())
    rcpts = ["a@soft.test", "b@soft.test"]
    msgid = v.inject(SENDER, rcpts, make_body("soft data"))
    out = wait_final(v, [(msgid, a) for a in rcpts])
    for a in rcpts:
        recs = out[(msgid, a)]
        assert [r["type"] for r in recs] == ["deferred", "delivered"], recs
        assert recs[0]["code"] == 452 and recs[0]["enh"] == "4.3.1", recs
        assert recs[1]["attempt"] == 2
    assert len(host.envelopes) == 1 and sorted(host.envelopes[0].rcpt_tos) == rcpts


@pytest.mark.needs_volleyctl
def test_all_mx_unreachable_then_retry_domain(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx1.down.test": "127.0.0.98", "mx2.down.test": "127.0.0.99"},
                      mx=[("down.test", "mx1.down.test", 10), ("down.test", "mx2.down.test", 20)])
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "1h",
                                         "delivery.site_down_seconds": 600}))
    msgid = v.inject(SENDER, ["x@down.test"], make_body("down"))
    t0 = time.time()
    d = wait_acct(v, lambda r: r["msgid"] == msgid)[0]
    assert d["type"] == "deferred" and d["attempt"] == 1, d
    assert d["code"] == 0 or 400 <= d["code"] < 500, d
    assert d["enh"].startswith("4."), d
    assert _parse_ts(d["next_attempt"]) >= t0 + 3000, d
    s = v.show(msgid)["recipients"][0]
    assert s["state"] == "deferred" and s["attempts"] == 1, s

    host = mailnet.smtpd("127.0.0.98", "mx1.down.test")
    time.sleep(0.5)
    assert host.sessions == 0, "tried again before the retry schedule said so"
    t1 = time.monotonic()
    r = v.volleyctl("retry", "down.test")
    assert r.returncode == 0, r
    recs = wait_final(v, [(msgid, "x@down.test")], timeout=8)[(msgid, "x@down.test")]
    assert time.monotonic() - t1 < 8
    assert [x["type"] for x in recs] == ["deferred", "delivered"], recs
    assert recs[1]["attempt"] == 2 and recs[1]["mx"] == "mx1.down.test", recs
    assert [e.rcpt_tos for e in host.envelopes] == [["x@down.test"]]
    assert v.list() == {}


@pytest.mark.needs_volleyctl
def test_retry_by_message_id(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.later.test": "127.0.0.5", "mx.other.test": "127.0.0.6"},
                      mx=[("later.test", "mx.later.test", 10), ("other.test", "mx.other.test", 10)])
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "1h",
                                         "delivery.site_down_seconds": 600}))
    first = v.inject(SENDER, ["x@later.test"], make_body("retry me"))
    second = v.inject(SENDER, ["y@later.test"], make_body("leave me"))
    wait_acct(v, lambda r: r["type"] == "deferred", 2)
    host = mailnet.smtpd("127.0.0.5", "mx.later.test")
    r = v.volleyctl("retry", first)
    assert r.returncode == 0, r
    assert b"1 recipient" in r.stdout, r.stdout
    recs = wait_final(v, [(first, "x@later.test")], timeout=8)[(first, "x@later.test")]
    assert recs[-1]["type"] == "delivered" and recs[-1]["attempt"] == 2, recs
    time.sleep(1.0)
    # only the message named was made due
    assert [e.rcpt_tos for e in host.envelopes] == [["x@later.test"]]
    assert list(v.list()) == [second]
    assert v.show(second)["recipients"][0]["attempts"] == 1
    # retry --id and an unknown id
    r = v.volleyctl("retry", "--id", second)
    assert r.returncode == 0, r
    wait_final(v, [(second, "y@later.test")], timeout=8)
    r = v.volleyctl("retry", "0123456789ABCDEF")
    assert r.returncode == 0 and b"0 recipient" in r.stdout, r


def test_restart_with_full_queue(mailnet, volley_factory):
    domains = ["r%d.test" % i for i in range(5)]
    mailnet.start_dns(hosts={"mx.restart.test": "127.0.0.7"},
                      mx=[(d, "mx.restart.test", 10) for d in domains])
    # nothing listens on 127.0.0.7 yet: everything is deferred, over and over
    v = volley_factory(mailnet.settings())
    messages = []
    for m in range(50):
        rcpts = ["u%d.%d@%s" % (m, k, domains[k % 5]) for k in range(10)]
        body = make_body("restart %d" % m, extra_headers=["Message-ID: <restart-%d@test>" % m])
        messages.append((SENDER, rcpts, body))
    ids = inject_many(v, messages, sessions=4)
    assert v.ctl({"cmd": "status"})["queue"]["recipients"] == 500
    assert not [r for r in acct_records(v) if r["type"] != "deferred"]
    rc = v.stop()
    assert rc == 0, "volleyd exited with %r on SIGTERM" % rc

    host = mailnet.smtpd("127.0.0.7", "mx.restart.test")
    v.start()
    expected = {(m, r) for m, (_, rcpts, _) in zip(ids, messages) for r in rcpts}
    out = wait_final(v, expected, timeout=40)
    for key, recs in out.items():
        finals = [r for r in recs if r["type"] != "deferred"]
        assert [r["type"] for r in finals] == ["delivered"], (key, recs)
    got = Counter((message_id_header(e.content), r) for e in host.envelopes for r in e.rcpt_tos)
    want = {("<restart-%d@test>" % m, r) for m, (_, rcpts, _) in enumerate(messages)
            for r in rcpts}
    dups = {k: n for k, n in got.items() if n > 1}
    assert not dups, "delivered more than once: %s" % sorted(dups)[:10]
    assert set(got) == want, (len(got), len(want))
    st = v.ctl({"cmd": "status"})
    assert st["queue"]["recipients"] == 0, st
    v.assert_consistent()


def test_expiry(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.dead.test": "127.0.0.99"}, mx=[("dead.test", "mx.dead.test", 10)])
    v = volley_factory(mailnet.settings({"delivery.max_age": 2}))
    rcpts = ["a@dead.test", "b@dead.test"]
    msgid = v.inject(SENDER, rcpts, make_body("expire"))
    t0 = time.monotonic()
    out = wait_final(v, [(msgid, a) for a in rcpts], timeout=10)
    assert time.monotonic() - t0 < 8
    for a in rcpts:
        recs = out[(msgid, a)]
        assert recs[-1]["type"] == "expired", recs
        assert all(r["type"] == "deferred" for r in recs[:-1]), recs
        assert recs[-1]["enh"] == "4.4.7", recs
        assert "expired" in recs[-1]["diag"], recs
        assert "next_attempt" not in recs[-1]
    assert v.list() == {}
    st = v.ctl({"cmd": "status"})
    assert st["queue"] == {"messages": 0, "recipients": 0, "due": 0}, st
    # nothing more happens to it
    n = len(acct_records(v))
    time.sleep(1.5)
    assert len(acct_records(v)) == n


@pytest.mark.parametrize("shape", ["two_domains", "split_by_max_rcpts"])
def test_site_down_with_multi_job_message(mailnet, volley_factory, shape):
    # A message whose recipients make more than one job (two domains of one site, or
    # more recipients than max_recipients_per_transaction) while that site is down:
    # every job is settled (deferred) as it is loaded.  The daemon must keep running
    # and keep deferring.
    mailnet.start_dns(hosts={"mx.down.test": "127.0.0.99"},
                      mx=[("d1.test", "mx.down.test", 10), ("d2.test", "mx.down.test", 10)])
    over = {"delivery.site_down_seconds": 60}
    if shape == "split_by_max_rcpts":
        over["delivery.max_recipients_per_transaction"] = 1
    v = volley_factory(mailnet.settings(over))
    rcpts = ["a@d1.test", "b@d2.test"] if shape == "two_domains" else ["a@d1.test", "b@d1.test"]
    msgid = v.inject(SENDER, rcpts, make_body("site down"))
    # attempt 1 resolves and finds the site down; attempts 2 and 3 meet the down site
    for a in rcpts:
        wait_acct(v, lambda r: r["recipient"] == a and r["type"] == "deferred", 3, timeout=8)
    assert v.running(), "volleyd died:\n%s" % v.stderr_tail()
    s = v.show(msgid)
    assert all(r["state"] == "deferred" and r["attempts"] >= 3 for r in s["recipients"]), s


def test_partial_4xx_retries_only_the_deferred_recipient(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.part.test": "127.0.0.2"}, mx=[("part.test", "mx.part.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.part.test")
    host.handler.rcpt_script = lambda addr, n: (
        "452 4.2.2 <%s>: mailbox full" % addr if addr.startswith("full") and n == 1 else None)
    v = volley_factory(mailnet.settings())
    rcpts = ["a@part.test", "full@part.test", "c@part.test"]
    msgid = v.inject(SENDER, rcpts, make_body("partial"))
    out = wait_final(v, [(msgid, a) for a in rcpts])
    assert [r["type"] for r in out[(msgid, "a@part.test")]] == ["delivered"]
    assert [r["type"] for r in out[(msgid, "c@part.test")]] == ["delivered"]
    full = out[(msgid, "full@part.test")]
    assert [r["type"] for r in full] == ["deferred", "delivered"], full
    assert full[0]["code"] == 452 and full[0]["enh"] == "4.2.2", full
    assert full[1]["attempt"] == 2
    assert [e.rcpt_tos for e in host.envelopes] == [["a@part.test", "c@part.test"],
                                                    ["full@part.test"]]
    assert host.handler.rcpt_seen == {"a@part.test": 1, "full@part.test": 2, "c@part.test": 1}
    assert v.list() == {}


def _slow_host(mailnet, volley_factory, delay, data_done=1):
    mailnet.start_dns(hosts={"mx.slow.test": "127.0.0.2"}, mx=[("slow.test", "mx.slow.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.slow.test")
    host.handler.data_delay = delay
    v = volley_factory(mailnet.settings({"delivery.timeout_data_done": data_done}))
    return v, host


def test_hold_during_failed_delivery_wins(mailnet, volley_factory):
    # the host takes 3 s to answer the final dot; volleyd gives up after 1 s.  A hold
    # made meanwhile stays: the recipient is held, not deferred, and not tried again
    v, host = _slow_host(mailnet, volley_factory, 3.0)
    msgid = v.inject(SENDER, ["x@slow.test"], make_body("hold in flight"))
    assert host.handler.data_arrived.wait(5)
    r = v.ctl({"cmd": "hold", "id": msgid})
    assert r["ok"] and r["recipients"] == 1, r
    d = wait_acct(v, lambda r: r["msgid"] == msgid, timeout=5)[0]
    assert d["type"] == "deferred", d
    time.sleep(2.0)
    s = v.show(msgid)["recipients"][0]
    assert s["state"] == "held", s
    assert host.handler.data_seen == 1, "a held recipient was tried again"
    host.handler.data_delay = 0
    assert v.ctl({"cmd": "release", "id": msgid})["ok"]
    recs = wait_final(v, [(msgid, "x@slow.test")])[(msgid, "x@slow.test")]
    assert recs[-1]["type"] == "delivered", recs


def test_hold_during_successful_delivery(mailnet, volley_factory):
    # the 250 comes after the operator held the message: it was delivered, so it is
    # gone (a later release must not send it again)
    v, host = _slow_host(mailnet, volley_factory, 0.5, data_done=10)
    msgid = v.inject(SENDER, ["x@slow.test"], make_body("delivered while held"))
    assert host.handler.data_arrived.wait(5)
    v.ctl({"cmd": "hold", "id": msgid})
    recs = wait_final(v, [(msgid, "x@slow.test")])[(msgid, "x@slow.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert v.list() == {}


def test_delete_during_delivery(mailnet, volley_factory):
    v, host = _slow_host(mailnet, volley_factory, 3.0)
    msgid = v.inject(SENDER, ["x@slow.test"], make_body("delete in flight"))
    assert host.handler.data_arrived.wait(5)
    r = v.ctl({"cmd": "delete", "id": msgid})
    assert r["ok"] and r["recipients"] == 1 and r["messages"] == 1, r
    time.sleep(2.5)
    assert v.list() == {}
    assert not [r for r in acct_records(v) if r["msgid"] == msgid], acct_records(v)
    assert host.handler.data_seen == 1
    v.assert_consistent()


def test_retry_schedule(mailnet, volley_factory):
    # waits 1 s, then 3 s, and the last one repeats
    mailnet.start_dns(hosts={"mx.sched.test": "127.0.0.99"},
                      mx=[("sched.test", "mx.sched.test", 10)])
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "1s,3s"}))
    msgid = v.inject(SENDER, ["x@sched.test"], make_body("schedule"))
    recs = wait_acct(v, lambda r: r["msgid"] == msgid, 3, timeout=12)[:3]
    assert [r["attempt"] for r in recs] == [1, 2, 3], recs
    waits = [_parse_ts(r["next_attempt"]) - _parse_ts(r["ts"][:19] + "Z") for r in recs]
    assert waits[0] in (0, 1, 2) and waits[1] in (2, 3, 4) and waits[2] in (2, 3, 4), (waits, recs)
    gaps = [_parse_ts(b["ts"][:19] + "Z") - _parse_ts(a["ts"][:19] + "Z")
            for a, b in zip(recs, recs[1:])]
    assert gaps[0] in (0, 1, 2) and gaps[1] in (2, 3, 4, 5), (gaps, recs)


def test_sigterm_while_delivering(mailnet, volley_factory):
    # a transaction waits for its final reply when volleyd is told to stop: it exits
    # promptly, records nothing for it, and delivers after the restart
    v, host = _slow_host(mailnet, volley_factory, 5.0, data_done=30)
    msgid = v.inject(SENDER, ["x@slow.test"], make_body("stop while delivering"))
    assert host.handler.data_arrived.wait(5)
    t0 = time.monotonic()
    rc = v.stop()
    assert rc == 0, rc
    assert time.monotonic() - t0 < 3, "slow to stop with a delivery in flight"
    assert not acct_records(v)
    host.handler.data_delay = 0
    v.start()
    recs = wait_final(v, [(msgid, "x@slow.test")])[(msgid, "x@slow.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["attempt"] == 1, recs
    v.assert_consistent()


@pytest.mark.needs_volleyctl
def test_retry_by_campaign(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.camp.test": "127.0.0.5"}, mx=[("camp.test", "mx.camp.test", 10)])
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "1h",
                                         "delivery.site_down_seconds": 600}))
    a = v.inject(SENDER, ["a@camp.test"], make_body("a", extra_headers=["X-Volley-Campaign: c-1"]))
    b = v.inject(SENDER, ["b@camp.test"], make_body("b", extra_headers=["X-Volley-Campaign: c-2"]))
    wait_acct(v, lambda r: r["type"] == "deferred", 2)
    host = mailnet.smtpd("127.0.0.5", "mx.camp.test")
    r = v.volleyctl("retry", "--campaign", "c-1")
    assert r.returncode == 0 and b"1 recipient" in r.stdout, r
    recs = wait_final(v, [(a, "a@camp.test")], timeout=8)[(a, "a@camp.test")]
    assert recs[-1]["type"] == "delivered" and recs[-1]["campaign"] == "c-1", recs
    time.sleep(1.0)
    assert [e.rcpt_tos for e in host.envelopes] == [["a@camp.test"]]
    assert list(v.list()) == [b]
