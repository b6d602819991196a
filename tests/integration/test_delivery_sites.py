"""Delivery: sites (domains sharing MX hosts) share connections; volleyctl sites."""

import json
import math
import time

import pytest

from mailnet import inject_many, wait_final, wait_until
from volley_harness import make_body

SENDER = "bulk-sender@example.org"


def _sites(v):
    r = v.ctl({"cmd": "sites"})
    assert r.get("ok"), r
    return r["sites"]


def test_domains_sharing_mx_share_connections(mailnet, volley_factory):
    domains = ["d%02d.share.test" % i for i in range(20)]
    mailnet.start_dns(hosts={"mx.shared.test": "127.0.0.2"},
                      mx=[(d, "mx.shared.test", 10) for d in domains])
    host = mailnet.smtpd("127.0.0.2", "mx.shared.test")
    max_conn, max_msgs = 4, 50
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": max_conn,
                                         "delivery.max_messages_per_connection": max_msgs,
                                         "delivery.idle_timeout": 5}))
    messages = [(SENDER, ["u%d@%s" % (i, domains[i % 20])], make_body("share %d" % i))
                for i in range(200)]
    ids = inject_many(v, messages, sessions=2)
    expected = {(m, rc[0]) for m, (_, rc, _) in zip(ids, messages)}
    out = wait_final(v, expected, timeout=30)
    assert all([r["type"] for r in recs] == ["delivered"] for recs in out.values()), \
        [recs for recs in out.values() if recs[-1]["type"] != "delivered"][:3]
    assert {recs[0]["site"] for recs in out.values()} == {"mx.shared.test"}
    bound = max_conn * math.ceil(200 / max_msgs) + 4
    assert host.sessions <= bound, "%d sessions for 200 messages (bound %d)" % (
        host.sessions, bound)
    assert host.handler.max_active <= max_conn, host.handler.max_active
    assert len(host.envelopes) == 200
    sites = _sites(v)
    assert len(sites) == 1, sites
    s = sites[0]
    assert s["site"] == "mx.shared.test" and s["hosts"] == ["mx.shared.test"], s
    assert s["delivered"] == 200 and s["deferred"] == 0 and s["bounced"] == 0, s
    assert s["queued"] == 0, s


def test_throughput_smtp_sink(mailnet, volley_factory):
    """1000 messages over 10 domains that share one smtp-sink: all delivered, few
    sessions."""
    domains = ["t%d.sink.test" % i for i in range(10)]
    mailnet.start_dns(hosts={"mx.sink.test": "127.0.0.3"},
                      mx=[(d, "mx.sink.test", 10) for d in domains])
    sink = mailnet.sink("127.0.0.3")
    max_conn, max_msgs = 5, 100
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": max_conn,
                                         "delivery.max_messages_per_connection": max_msgs,
                                         "delivery.idle_timeout": 5}))
    n = 1000
    messages = [(SENDER, ["u%d@%s" % (i, domains[i % 10])], make_body("sink %d" % i))
                for i in range(n)]
    t0 = time.monotonic()
    ids = inject_many(v, messages, sessions=4)
    t_inj = time.monotonic() - t0
    out = wait_final(v, {(m, rc[0]) for m, (_, rc, _) in zip(ids, messages)}, timeout=60)
    t_all = time.monotonic() - t0
    assert all(recs[-1]["type"] == "delivered" for recs in out.values())
    sess, mesg = wait_until(lambda: (lambda c: c if c[1] >= n else None)(sink.counters()),
                            5, "smtp-sink to count %d messages" % n)
    assert mesg == n, "smtp-sink counted %d messages for %d" % (mesg, n)
    bound = max_conn * math.ceil(n / max_msgs) + 5
    assert sess <= bound, "%d sessions (bound %d)" % (sess, bound)
    print("throughput: %d messages injected in %.1f s, all delivered after %.1f s "
          "(%d sessions)" % (n, t_inj, t_all, sess))


@pytest.mark.needs_volleyctl
def test_volleyctl_sites(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.s.test": "127.0.0.2", "mx.q.test": "127.0.0.99"},
                      mx=[("s.test", "mx.s.test", 10), ("s2.test", "mx.s.test", 10),
                          ("q.test", "mx.q.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.s.test")
    v = volley_factory(mailnet.settings({"delivery.idle_timeout": 60,
                                         "delivery.retry_schedule": "1h",
                                         "delivery.site_down_seconds": 600}))
    r = v.volleyctl("sites")
    assert r.returncode == 0 and r.stdout.strip() == b"no sites yet", r
    r = v.volleyctl("sites", "--json")
    assert r.returncode == 0, r
    assert json.loads(r.stdout) == {"ok": True, "sites": []}

    ids = [v.inject(SENDER, ["a%d@%s" % (i, d)], make_body("sites"))
           for i, d in enumerate(["s.test", "s2.test", "s.test"])]
    down = v.inject(SENDER, ["x@q.test"], make_body("down"))
    wait_final(v, [(m, "a%d@%s" % (i, d)) for i, (m, d) in
                   enumerate(zip(ids, ["s.test", "s2.test", "s.test"]))])
    wait_until(lambda: any(s["site"] == "mx.q.test" and s["deferred"] == 1 for s in _sites(v)),
               5, "the deferral at mx.q.test")

    r = v.volleyctl("sites", "--json")
    assert r.returncode == 0, r
    sites = {s["site"]: s for s in json.loads(r.stdout)["sites"]}
    assert set(sites) == {"mx.s.test", "mx.q.test"}, sites
    s = sites["mx.s.test"]
    assert s["hosts"] == ["mx.s.test"], s
    assert s["delivered"] == 3 and s["deferred"] == 0 and s["bounced"] == 0, s
    assert s["queued"] == 0, s
    # the connections stay open (idle_timeout 60) and are all idle
    assert 1 <= s["connections"] == s["idle"] == host.handler.active <= 3, (
        s, host.handler.active)
    assert s["down_until"] == "" and s["down_reason"] == "", s
    assert s["worker"] == 0
    q = sites["mx.q.test"]
    assert q["delivered"] == 0 and q["deferred"] == 1 and q["connections"] == 0, q
    assert q["down_until"] and q["down_reason"], q
    assert q["last_reply"], q

    r = v.volleyctl("sites")
    assert r.returncode == 0, r
    lines = r.stdout.decode().splitlines()
    head = lines[0].split()
    for col in ("SITE", "CONNS", "QUEUED", "DELIVERED", "DEFERRED", "BOUNCED"):
        assert col in head, lines[0]
    rows = {l.split()[0]: l.split() for l in lines[1:] if l.strip()}
    assert set(rows) == {"mx.s.test", "mx.q.test"}, lines
    row = rows["mx.s.test"]
    assert row[1:6] == [str(s["connections"]), "0", "3", "0", "0"], lines
    row = rows["mx.q.test"]
    assert row[1:6] == ["0", "0", "0", "1", "0"], lines

    # retry: the message to the down site goes out once its host is up
    mailnet.smtpd("127.0.0.99", "mx.q.test")
    r = v.volleyctl("retry", down)
    assert r.returncode == 0, r
    recs = wait_final(v, [(down, "x@q.test")], timeout=8)[(down, "x@q.test")]
    assert recs[-1]["type"] == "delivered" and recs[-1]["attempt"] == 2, recs
    q = {s["site"]: s for s in _sites(v)}["mx.q.test"]
    assert q["delivered"] == 1 and q["down_until"] == "", q
