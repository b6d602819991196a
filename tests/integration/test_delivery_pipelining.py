"""Delivery: pipelining past the end of data (RFC 2920 3.1).

With PIPELINING, the next message's MAIL, RCPT and DATA go out in the same write
as the current message's final "."; the scripted host counts final dots that
arrived with the next command already behind them.  A session that dies with a
chained transaction in flight defers exactly the transactions it carried.
"""

from mailnet import wait_final
from volley_harness import make_body

SENDER = "bulk-sender@example.org"


def _setup(mailnet, volley_factory, behaviours, overrides=None):
    mailnet.start_dns(hosts={"mx.chain.test": "127.0.0.2"},
                      mx=[("chain.test", "mx.chain.test", 10)])
    host = mailnet.scripted("127.0.0.2", behaviours, name="mx.chain.test")
    settings = {"delivery.max_connections_per_site": 1, "delivery.retry_schedule": "1s"}
    settings.update(overrides or {})
    v = volley_factory(mailnet.settings(settings))
    return v, host


def _inject_batch(v, n, tag):
    sent = []
    for i in range(n):
        rcpt = "user%d@chain.test" % i
        body = make_body("%s %d" % (tag, i), body_lines=[".leading dot", "line %d" % i])
        sent.append((v.inject(SENDER, [rcpt], body), rcpt, body))
    return sent


def _by_rcpt(host):
    got = {}
    for env in host.envelopes:
        for r in env.rcpt_tos:
            got.setdefault(r, []).append(env)
    return got


def test_next_message_rides_with_the_final_dot(mailnet, volley_factory):
    v, host = _setup(mailnet, volley_factory, ["slow-banner"])
    sent = _inject_batch(v, 6, "chained")
    out = wait_final(v, [(m, r) for m, r, _ in sent], timeout=20)
    assert all(recs[-1]["type"] == "delivered" for recs in out.values()), out
    got = _by_rcpt(host)
    for msgid, rcpt, body in sent:
        assert len(got[rcpt]) == 1 and got[rcpt][0].content == body, rcpt
    assert host.sessions == 1
    # every message but the last followed a "." in the same write
    assert host.after_dot >= 4, host.after_dot
    assert v.list() == {}


def test_pipelining_past_data_can_be_turned_off(mailnet, volley_factory):
    v, host = _setup(mailnet, volley_factory, ["slow-banner"],
                     {"delivery.pipeline_next_message": False})
    sent = _inject_batch(v, 4, "lockstep")
    out = wait_final(v, [(m, r) for m, r, _ in sent], timeout=20)
    assert all(recs[-1]["type"] == "delivered" for recs in out.values()), out
    assert len(host.envelopes) == 4
    assert host.after_dot == 0


def test_drop_with_a_chained_message_defers_it_once(mailnet, volley_factory):
    # session 1: the first message is accepted, then the host hangs up when the
    # chained MAIL arrives; every message still arrives exactly once
    v, host = _setup(mailnet, volley_factory, ["drop-mail2", "slow-banner"])
    sent = _inject_batch(v, 3, "dropped")
    out = wait_final(v, [(m, r) for m, r, _ in sent], timeout=30)
    got = _by_rcpt(host)
    for msgid, rcpt, body in sent:
        recs = out[(msgid, rcpt)]
        assert recs[-1]["type"] == "delivered", recs
        assert len(got[rcpt]) == 1 and got[rcpt][0].content == body, rcpt
        assert recs[-1]["attempt"] == len(recs), recs
    first = [out[(m, r)] for m, r, _ in sent if len(out[(m, r)]) == 1]
    deferred = [out[(m, r)] for m, r, _ in sent if len(out[(m, r)]) > 1]
    # the one whose MAIL met the hang-up was deferred once (it had been sent);
    # one that was only queued behind it was not counted as an attempt
    assert len(deferred) == 1, out
    assert deferred[0][0]["type"] == "deferred" and deferred[0][0]["enh"].startswith("4."), deferred
    assert len(first) == 2, out
    assert host.sessions >= 2
    assert v.list() == {}
