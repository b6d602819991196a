"""Delivery: mail hosts that drop the connection or stall (raw scripted servers).

A message whose session fails is deferred - never bounced, never lost - and goes
out on a later attempt once the host behaves.
"""

import time

import pytest

from mailnet import acct_records, wait_acct, wait_final
from volley_harness import make_body

SENDER = "bulk-sender@example.org"

STAGES = ["drop-banner", "drop-ehlo", "drop-mail", "drop-rcpt", "drop-data", "drop-dot"]


def _setup(mailnet, volley_factory, behaviours, overrides=None):
    mailnet.start_dns(hosts={"mx.flaky.test": "127.0.0.2"},
                      mx=[("flaky.test", "mx.flaky.test", 10)])
    host = mailnet.scripted("127.0.0.2", behaviours, name="mx.flaky.test")
    v = volley_factory(mailnet.settings(overrides))
    return v, host


def _check_deferred_then_delivered(v, host, msgid, rcpts, body):
    out = wait_final(v, [(msgid, a) for a in rcpts], timeout=15)
    for a in rcpts:
        recs = out[(msgid, a)]
        types = [r["type"] for r in recs]
        assert types[-1] == "delivered", recs
        assert set(types[:-1]) == {"deferred"}, "want deferrals, then delivery: %s" % recs
        for r in recs[:-1]:
            assert r["code"] == 0 or 400 <= r["code"] < 500, r
            assert r["enh"].startswith("4."), r
            assert r["next_attempt"], r
        assert recs[-1]["attempt"] == len(recs), recs
    assert len(host.envelopes) == 1, host.envelopes
    env = host.envelopes[0]
    assert sorted(env.rcpt_tos) == sorted(rcpts) and env.mail_from == SENDER
    assert env.content == body
    assert v.list() == {}


@pytest.mark.parametrize("stage", STAGES)
def test_dropped_connection_defers(mailnet, volley_factory, stage):
    v, host = _setup(mailnet, volley_factory, [stage, "ok"])
    rcpts = ["a@flaky.test", "b@flaky.test"]
    body = make_body("drop at " + stage, body_lines=[".dot", "text"])
    msgid = v.inject(SENDER, rcpts, body)
    _check_deferred_then_delivered(v, host, msgid, rcpts, body)
    assert host.sessions >= 2
    if stage == "drop-dot":
        # the first session carried the whole text, but without a reply it is not
        # delivered: it is sent again (a duplicate is the price, not a loss)
        assert len(host.partial) == 1 and host.partial[0].content == body


def test_many_drops_then_delivery(mailnet, volley_factory):
    # one after the other, every stage fails once; the message still arrives once
    v, host = _setup(mailnet, volley_factory, STAGES + ["ok"])
    rcpts = ["a@flaky.test"]
    body = make_body("persistent")
    msgid = v.inject(SENDER, rcpts, body)
    out = wait_final(v, [(msgid, "a@flaky.test")], timeout=30)
    recs = out[(msgid, "a@flaky.test")]
    assert [r["type"] for r in recs].count("deferred") >= len(STAGES), recs
    assert recs[-1]["type"] == "delivered", recs
    assert not [r for r in acct_records(v) if r["type"] == "bounced"]
    assert len(host.envelopes) == 1 and host.envelopes[0].content == body


@pytest.mark.parametrize("stall, key", [("stall-banner", "delivery.timeout_greeting"),
                                        ("stall-dot", "delivery.timeout_data_done")])
def test_stalled_server_times_out(mailnet, volley_factory, stall, key):
    v, host = _setup(mailnet, volley_factory, [stall, "ok"],
                     {key: 1, "delivery.retry_schedule": "2s"})
    rcpts = ["a@flaky.test"]
    body = make_body("stall " + stall)
    t0 = time.monotonic()
    msgid = v.inject(SENDER, rcpts, body)
    d = wait_acct(v, lambda r: r["msgid"] == msgid, timeout=6)[0]
    elapsed = time.monotonic() - t0
    assert d["type"] == "deferred", d
    assert 0.8 <= elapsed <= 4.5, "deferred after %.1f s with a 1 s timeout" % elapsed
    assert d["code"] == 0 or 400 <= d["code"] < 500, d
    assert d["enh"].startswith("4."), d
    _check_deferred_then_delivered(v, host, msgid, rcpts, body)
    if stall == "stall-dot":
        assert len(host.partial) == 1


def test_helo_fallback(mailnet, volley_factory):
    v, host = _setup(mailnet, volley_factory, ["helo-only"])
    body = make_body("helo only", body_lines=[".dot", "plain 7-bit text"])
    msgid = v.inject(SENDER, ["a@flaky.test"], body)
    recs = wait_final(v, [(msgid, "a@flaky.test")])[(msgid, "a@flaky.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    cmds = [e.split()[0].upper() for n, b, e in host.log if e != "connect"]
    assert cmds[:3] == ["EHLO", "HELO", "MAIL"], host.log
    mail = [e for n, b, e in host.log if e.upper().startswith("MAIL")][0]
    assert mail.upper() == "MAIL FROM:<%s>" % SENDER.upper(), "ESMTP parameters after HELO: %r" % mail
    assert host.envelopes[0].content == body


def test_malformed_reply_defers(mailnet, volley_factory):
    v, host = _setup(mailnet, volley_factory, ["bad-reply", "ok"])
    body = make_body("bad reply")
    msgid = v.inject(SENDER, ["a@flaky.test"], body)
    _check_deferred_then_delivered(v, host, msgid, ["a@flaky.test"], body)
