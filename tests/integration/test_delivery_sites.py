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
    """2000 messages over 10 domains that share one smtp-sink: all delivered, few
    sessions."""
    domains = ["t%d.sink.test" % i for i in range(10)]
    mailnet.start_dns(hosts={"mx.sink.test": "127.0.0.3"},
                      mx=[(d, "mx.sink.test", 10) for d in domains])
    sink = mailnet.sink("127.0.0.3")
    max_conn, max_msgs = 5, 100
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": max_conn,
                                         "delivery.max_messages_per_connection": max_msgs,
                                         "delivery.idle_timeout": 5}))
    n = 2000
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
    # two tables: sites, then a blank line and one row per (source, site) pair
    blank = lines.index("")
    rows = {l.split()[0]: l.split() for l in lines[1:blank]}
    assert set(rows) == {"mx.s.test", "mx.q.test"}, lines
    phead = lines[blank + 1].split()
    assert phead[:4] == ["SITE", "CLASS", "SOURCE", "STATE"], lines
    prows = {l.split()[0]: l.split() for l in lines[blank + 2:] if l.strip()}
    assert set(prows) == {"mx.s.test", "mx.q.test"}, lines
    # no rules file: class "default", source "default", state normal
    assert prows["mx.s.test"][1:4] == ["default", "default", "normal"], lines
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


def test_max_messages_per_connection(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.mm.test": "127.0.0.2"}, mx=[("mm.test", "mx.mm.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.mm.test")
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": 1,
                                         "delivery.max_messages_per_connection": 2,
                                         "delivery.idle_timeout": 5}))
    messages = [(SENDER, ["u%d@mm.test" % i], make_body("mm %d" % i)) for i in range(6)]
    ids = inject_many(v, messages)
    wait_final(v, [(m, rc[0]) for m, (_, rc, _) in zip(ids, messages)])
    per_session = {}
    for e in host.envelopes:
        per_session[e.session] = per_session.get(e.session, 0) + 1
    assert len(host.envelopes) == 6
    assert max(per_session.values()) <= 2, per_session
    assert host.handler.max_active == 1
    assert host.sessions == len(per_session) == 3, (host.sessions, per_session)


def test_idle_connection_is_closed(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.idle.test": "127.0.0.2"}, mx=[("idle.test", "mx.idle.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.idle.test")
    v = volley_factory(mailnet.settings({"delivery.idle_timeout": 1}))
    msgid = v.inject(SENDER, ["x@idle.test"], make_body("idle"))
    wait_final(v, [(msgid, "x@idle.test")])
    t0 = time.monotonic()
    wait_until(lambda: host.handler.active == 0, 5, "the idle connection to close")
    assert time.monotonic() - t0 >= 0.5, "closed before idle_timeout"
    wait_until(lambda: _sites(v)[0]["connections"] == 0, 2, "sites to show no connection")
    # the next message opens a new one
    m2 = v.inject(SENDER, ["y@idle.test"], make_body("idle 2"))
    wait_final(v, [(m2, "y@idle.test")])
    assert host.sessions == 2


def test_two_workers(mailnet, volley_factory):
    domains = ["w%02d.test" % i for i in range(20)]
    mailnet.start_dns(hosts={"mx.w.test": "127.0.0.2"}, mx=[(d, "mx.w.test", 10) for d in domains])
    host = mailnet.smtpd("127.0.0.2", "mx.w.test")
    v = volley_factory(mailnet.settings({"delivery.workers": 2}))
    messages = [(SENDER, ["u%d@%s" % (i, domains[i % 20])], make_body("w %d" % i))
                for i in range(40)]
    ids = inject_many(v, messages)
    out = wait_final(v, [(m, rc[0]) for m, (_, rc, _) in zip(ids, messages)])
    assert all([r["type"] for r in recs] == ["delivered"] for recs in out.values())
    assert len(host.envelopes) == 40
    sites = _sites(v)
    # each worker has its own site object for the shared MX
    assert sorted(s["worker"] for s in sites) == [0, 1], sites
    assert {s["site"] for s in sites} == {"mx.w.test"}
    assert sum(s["delivered"] for s in sites) == 40, sites


def test_site_patterns(mailnet, volley_factory):
    # two domains with different MX hosts of one provider: one site by pattern
    mailnet.start_dns(hosts={"mx1.big.test": "127.0.0.2", "mx2.big.test": "127.0.0.2"},
                      mx=[("a.test", "mx1.big.test", 10), ("b.test", "mx2.big.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "big")
    v = volley_factory(mailnet.settings({"delivery.site_patterns": ["bigmail=mx*.big.test"]}))
    m1 = v.inject(SENDER, ["x@a.test"], make_body("p1"))
    m2 = v.inject(SENDER, ["y@b.test"], make_body("p2"))
    out = wait_final(v, [(m1, "x@a.test"), (m2, "y@b.test")])
    assert {recs[0]["site"] for recs in out.values()} == {"bigmail"}, out
    sites = _sites(v)
    assert [s["site"] for s in sites] == ["bigmail"], sites
    assert sites[0]["delivered"] == 2
    assert len(host.envelopes) == 2


def test_queue_larger_than_max_ready(mailnet, volley_factory):
    # 1500 recipients on disk, at most 100 in memory: the loader pages through them
    domains = ["m%d.test" % i for i in range(5)]
    mailnet.start_dns(hosts={"mx.mr.test": "127.0.0.2"}, mx=[(d, "mx.mr.test", 10) for d in domains])
    host = mailnet.smtpd("127.0.0.2", "mx.mr.test")
    v = volley_factory()  # no delivery while the queue fills
    messages = [(SENDER, ["u%d.%d@%s" % (i, k, domains[(i + k) % 5]) for k in range(5)],
                 make_body("mr %d" % i)) for i in range(300)]
    ids = inject_many(v, messages, sessions=4)
    v.stop()
    v.settings.update(mailnet.settings({"delivery.max_ready": 100}))
    v.start()
    expected = {(m, r) for m, (_, rcpts, _) in zip(ids, messages) for r in rcpts}
    out = wait_final(v, expected, timeout=40)
    assert all([r["type"] for r in recs] == ["delivered"] for recs in out.values())
    got = [(e.content, r) for e in host.envelopes for r in e.rcpt_tos]
    assert len(got) == 1500 and len(set(got)) == 1500


def test_loader_keeps_its_place_past_a_rewind(mailnet, volley_factory):
    # Mail queued in two bursts 5 s apart, then delivery starts with room for 100
    # recipients in memory, so the loader is still inside the first burst when its
    # once-a-second rewind scan finds the second (due a moment before the start).
    # The rewind must not move the loader's place to the newest keys: everything
    # between would wait for the once-a-minute full rescan.
    mailnet.start_dns(hosts={"mx.rw.test": "127.0.0.2"}, mx=[("rw.test", "mx.rw.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.rw.test")
    host.handler.data_delay = 0.02  # 4 connections: about 2,000 recipients a second
    v = volley_factory()  # no delivery while the queue fills
    older = [(SENDER, ["o%d.%d@rw.test" % (i, k) for k in range(10)], make_body("old %d" % i))
             for i in range(1000)]
    old_ids = inject_many(v, older, sessions=4)
    time.sleep(5)
    new_id = v.inject(SENDER, ["n@rw.test"], make_body("new"))
    v.stop()
    v.settings.update(mailnet.settings({"delivery.max_ready": 100,
                                        "delivery.max_connections_per_site": 4}))
    v.start()
    expected = {(m, r) for m, (_, rcpts, _) in zip(old_ids, older) for r in rcpts}
    expected.add((new_id, "n@rw.test"))
    # a few seconds of delivery here; a stalled loader would hold most of the first
    # burst until its full rescan, a minute after the start
    out = wait_final(v, expected, timeout=40)
    assert all([r["type"] for r in recs] == ["delivered"] for recs in out.values())
    assert len({r for e in host.envelopes for r in e.rcpt_tos}) == 10001


def test_domains_of_a_site_take_turns(mailnet, volley_factory):
    # One connection to a site that serves two domains, 150 messages queued for
    # big.test before 5 for small.test: the domains take turns on the connection,
    # so small.test's mail does not wait behind all of big.test's.
    mailnet.start_dns(hosts={"mx.turn.test": "127.0.0.2"},
                      mx=[("big.test", "mx.turn.test", 10), ("small.test", "mx.turn.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.turn.test")
    v = volley_factory()  # no delivery while the queue fills
    big = [(SENDER, ["b%d@big.test" % i], make_body("big %d" % i)) for i in range(150)]
    small = [(SENDER, ["s%d@small.test" % i], make_body("small %d" % i)) for i in range(5)]
    big_ids = inject_many(v, big)
    small_ids = inject_many(v, small)
    v.stop()
    v.settings.update(mailnet.settings({"delivery.max_connections_per_site": 1}))
    v.start()
    expected = {(m, r[0]) for m, (_, r, _) in zip(big_ids + small_ids, big + small)}
    wait_final(v, expected, timeout=60)
    order = [r for e in host.envelopes for r in e.rcpt_tos]
    assert len(order) == 155
    last_small = max(order.index("s%d@small.test" % i) for i in range(5))
    # in turns, small.test's fifth message is about the tenth sent
    assert last_small < 20, "small.test's mail went out as number %d of 155" % (last_small + 1)
    assert host.handler.max_active == 1


def test_connection_limits_per_domain_and_site(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.lim.test": "127.0.0.2"},
                      mx=[("l1.test", "mx.lim.test", 10), ("l2.test", "mx.lim.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.lim.test")
    host.handler.data_delay = 0.3
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": 4,
                                         "delivery.max_connections_per_domain": 1,
                                         "delivery.idle_timeout": 5}))
    messages = [(SENDER, ["u%d@l%d.test" % (i, 1 + i % 2)], make_body("lim %d" % i))
                for i in range(8)]
    ids = inject_many(v, messages)
    wait_final(v, [(m, rc[0]) for m, (_, rc, _) in zip(ids, messages)], timeout=15)
    h = host.handler
    assert dict(h.max_inflight) == {"l1.test": 1, "l2.test": 1}, h.max_inflight
    assert h.max_inflight_all == 2, "the two domains were not served in parallel"
    assert h.max_active <= 4


def test_source_address(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.src.test": "127.0.0.2"}, mx=[("src.test", "mx.src.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.src.test")
    v = volley_factory(mailnet.settings({"delivery.source_address": "127.0.0.50"}))
    msgid = v.inject(SENDER, ["x@src.test"], make_body("source"))
    recs = wait_final(v, [(msgid, "x@src.test")])[(msgid, "x@src.test")]
    assert recs[0]["type"] == "delivered" and recs[0]["source"] == "127.0.0.50", recs
    assert host.envelopes[0].peer == "127.0.0.50"


def test_server_closes_idle_connection(mailnet, volley_factory):
    # the host drops connections idle for 1 s (aiosmtpd's timeout: 421 and close);
    # volleyd keeps its own idle connections for 10 s.  The next message must not be
    # sent into the dead connection and deferred: it goes out on a new one.
    mailnet.start_dns(hosts={"mx.to.test": "127.0.0.2"}, mx=[("to.test", "mx.to.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.to.test", timeout=1)
    v = volley_factory(mailnet.settings({"delivery.idle_timeout": 10}))
    m1 = v.inject(SENDER, ["a@to.test"], make_body("first"))
    wait_final(v, [(m1, "a@to.test")])
    wait_until(lambda: host.handler.active == 0, 5, "the host to drop the idle connection")
    time.sleep(0.3)
    m2 = v.inject(SENDER, ["b@to.test"], make_body("second"))
    recs = wait_final(v, [(m2, "b@to.test")])[(m2, "b@to.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["attempt"] == 1
    assert host.sessions == 2
