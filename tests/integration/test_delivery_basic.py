"""Delivery: what arrives at the mail host, transactions, hard failures, DNS routing.

Every test builds its own mail world (mailnet: dnsmasq + mail hosts on 127.0.0.x,
all on one port) and a volleyd pointed at it, and waits on accounting.log with a
deadline.
"""

import time

import pytest

from mailnet import ACCT_KEYS, acct_records, wait_acct, wait_final
from volley_harness import make_body

SENDER = "bulk-sender@example.org"

# A message that is easy to damage on the way: dot-leading lines (one that is only a
# dot, one that is dot-space, a line of dots), a line of 998 octets, 8-bit text
# (UTF-8 and bytes that are not UTF-8), trailing white space, empty lines, a CRLF.CRLF
# look-alike inside the text, and a campaign header that must not leave the spool.
BYTE_EXACT_BODY = (
    b"From: Bulk Sender <bulk-sender@example.org>\r\n"
    b"To: <one@exact.test>\r\n"
    b"Subject: byte-exact delivery \xc3\xa9t\xc3\xa9\r\n"
    b"X-Volley-Campaign: spring-2024\r\n"
    b"Message-ID: <byte-exact-1@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n"
    b"\r\n"
    b".leading dot\r\n"
    b"..two leading dots\r\n"
    b".\r\n"
    b". dot space\r\n"
    b"....\r\n"
    b"\r\n"
    b"\r\n"
    b"caf\xc3\xa9 \xe2\x9c\x93 and raw 8-bit \xff\xfe\x80 octets\r\n"
    b"trailing white space   \t\r\n"
    + b"L" * 998 + b"\r\n"
    + b"." + b"D" * 997 + b"\r\n"
    b"not the end:\r\n"
    b".\r\n"
    b"still the message\r\n"
    b"last line\r\n"
)


def _stored_form(body):
    """What volleyd stores: the message without its X-Volley-Campaign header."""
    return b"".join(l for l in body.splitlines(keepends=True)
                    if not l.lower().startswith(b"x-volley-campaign:"))


def _net(mailnet, volley_factory, hosts, mx=(), null_mx=(), overrides=None, smtpd=()):
    """DNS from hosts/mx/null_mx, aiosmtpd hosts for [(ip, name)], a started volleyd."""
    mailnet.start_dns(hosts=hosts, mx=list(mx), null_mx=null_mx)
    started = [mailnet.smtpd(ip, name) for ip, name in smtpd]
    v = volley_factory(mailnet.settings(overrides))
    return v, started


def test_byte_exact_delivery(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.exact.test": "127.0.0.2"}, mx=[("exact.test", "mx.exact.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.exact.test")
    # first run: the harness default, delivery.enabled = false, so nothing is
    # delivered while the message is held and read back
    v = volley_factory()
    rcpts = ["one@exact.test", "Two.Mixed@exact.test"]
    msgid = v.inject(SENDER, rcpts, BYTE_EXACT_BODY, params="BODY=8BITMIME")
    r = v.ctl({"cmd": "hold", "id": msgid})
    assert r == {"ok": True, "recipients": 2, "messages": 1}, r
    stored = v.cat(msgid)
    assert stored == _stored_form(BYTE_EXACT_BODY)
    assert b"x-volley-campaign" not in stored.lower()

    # second run: the real mail world; held mail must stay put until released
    v.settings.update(mailnet.settings())
    v.restart()
    time.sleep(1.0)
    assert host.sessions == 0 and not host.envelopes, "held mail was delivered"
    assert not acct_records(v)
    assert v.cat(msgid) == stored
    r = v.ctl({"cmd": "release", "id": msgid})
    assert r == {"ok": True, "recipients": 2, "messages": 1}, r

    outcomes = wait_final(v, [(msgid, a) for a in rcpts], timeout=10)
    envs = host.envelopes
    assert len(envs) == 1, "one transaction expected for one domain: %r" % envs
    env = envs[0]
    assert env.content == stored, "received bytes differ from the stored message"
    assert b"x-volley-campaign" not in env.content.lower()
    assert env.mail_from == SENDER
    assert env.rcpt_tos == rcpts
    opts = [o.upper() for o in env.mail_options]
    assert "BODY=8BITMIME" in opts, env.mail_options
    assert any(o.startswith("SIZE=") for o in opts), env.mail_options
    assert env.helo == "volley.test"
    assert not env.tls

    for addr in rcpts:
        recs = outcomes[(msgid, addr)]
        assert [x["type"] for x in recs] == ["delivered"], recs
        rec = recs[0]
        assert set(rec) == ACCT_KEYS, "accounting fields: %s" % sorted(rec)
        assert rec["code"] == 250 and rec["enh"] == "2.0.0", rec
        assert "queued on mx.exact.test" in rec["diag"], rec
        assert rec["mx"] == "mx.exact.test" and rec["ip"] == "127.0.0.2", rec
        assert rec["attempt"] == 1, rec
        assert rec["domain"] == "exact.test" and rec["site"] == "mx.exact.test", rec
        assert rec["sender"] == SENDER and rec["recipient"] == addr, rec
        assert rec["campaign"] == "spring-2024", rec
        assert rec["tls"] == "" and rec["cipher"] == "" and rec["source"] == "", rec
        assert rec["vmta"] == "default" and rec["pool"] == "default", rec
        assert isinstance(rec["queue_s"], int) and 0 <= rec["queue_s"] < 120, rec

    st = v.ctl({"cmd": "status"})
    assert st["queue"] == {"messages": 0, "recipients": 0, "due": 0}, st
    assert v.list() == {}
    v.assert_consistent()


def _transactions_test(mailnet, volley_factory, rcpts, overrides=None):
    doms = ["one.test", "two.test"]
    v, (host,) = _net(mailnet, volley_factory, {"mx.txn.test": "127.0.0.2"},
                      mx=[(d, "mx.txn.test", 10) for d in doms],
                      smtpd=[("127.0.0.2", "mx.txn.test")], overrides=overrides)
    body = make_body("transactions")
    msgid = v.inject(SENDER, rcpts, body)
    outcomes = wait_final(v, [(msgid, a) for a in rcpts], timeout=10)
    assert all([x["type"] for x in recs] == ["delivered"] for recs in outcomes.values()), outcomes
    return v, host, msgid


def test_one_transaction_per_domain_grouped(mailnet, volley_factory):
    rcpts = ["a1@one.test", "a2@one.test", "a3@one.test", "b1@two.test", "b2@two.test"]
    v, host, _ = _transactions_test(mailnet, volley_factory, rcpts)
    envs = sorted(host.envelopes, key=lambda e: e.rcpt_tos[0])
    assert [e.rcpt_tos for e in envs] == [rcpts[:3], rcpts[3:]], envs


def test_one_transaction_per_domain_interleaved(mailnet, volley_factory):
    # the same, with the recipients of the two domains alternating in the envelope
    rcpts = ["a1@one.test", "b1@two.test", "a2@one.test", "b2@two.test", "a3@one.test"]
    v, host, _ = _transactions_test(mailnet, volley_factory, rcpts)
    got = sorted(sorted(e.rcpt_tos) for e in host.envelopes)
    assert got == [["a1@one.test", "a2@one.test", "a3@one.test"],
                   ["b1@two.test", "b2@two.test"]], host.envelopes


def test_max_recipients_per_transaction(mailnet, volley_factory):
    rcpts = ["r%d@one.test" % i for i in range(5)]
    v, host, _ = _transactions_test(mailnet, volley_factory, rcpts,
                                    {"delivery.max_recipients_per_transaction": 2})
    sizes = sorted(len(e.rcpt_tos) for e in host.envelopes)
    assert sizes == [1, 2, 2], host.envelopes
    assert sorted(r for e in host.envelopes for r in e.rcpt_tos) == rcpts


def test_hard_failure_bounces(mailnet, volley_factory):
    v, (host,) = _net(mailnet, volley_factory, {"mx.hard.test": "127.0.0.2"},
                      mx=[("hard.test", "mx.hard.test", 10)], smtpd=[("127.0.0.2", "mx.hard.test")])
    host.handler.rcpt_script = lambda addr, n: (
        "550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr
        if addr.startswith("bad") else None)
    body = make_body("hard failure")
    only_bad = v.inject(SENDER, ["bad1@hard.test"], body)
    mixed = v.inject(SENDER, ["good@hard.test", "bad2@hard.test"], body)
    out = wait_final(v, [(only_bad, "bad1@hard.test"), (mixed, "good@hard.test"),
                         (mixed, "bad2@hard.test")], timeout=10)
    for key in [(only_bad, "bad1@hard.test"), (mixed, "bad2@hard.test")]:
        recs = out[key]
        assert [r["type"] for r in recs] == ["bounced"], recs
        assert recs[0]["code"] == 550 and recs[0]["enh"] == "5.1.1", recs
        assert "User unknown" in recs[0]["diag"], recs
        assert recs[0]["attempt"] == 1 and recs[0]["mx"] == "mx.hard.test", recs
    good = out[(mixed, "good@hard.test")]
    assert [r["type"] for r in good] == ["delivered"] and good[0]["code"] == 250, good
    assert [e.rcpt_tos for e in host.envelopes] == [["good@hard.test"]], host.envelopes
    assert v.list() == {}, "messages left after every recipient was settled"
    st = v.ctl({"cmd": "status"})
    assert st["queue"]["recipients"] == 0, st
    # bounced recipients are not tried again
    time.sleep(1.5)
    assert host.handler.rcpt_seen["bad1@hard.test"] == 1
    assert host.handler.rcpt_seen["bad2@hard.test"] == 1
    assert len(acct_records(v)) == 3, acct_records(v)


def test_null_mx_bounces_without_connecting(mailnet, volley_factory):
    # nullmx.test also has an A record with a live host: a null MX must not fall back
    # to it (RFC 7505)
    v, (host,) = _net(mailnet, volley_factory, {"nullmx.test": "127.0.0.3"},
                      null_mx=["nullmx.test"], smtpd=[("127.0.0.3", "nullmx.test")])
    msgid = v.inject(SENDER, ["x@nullmx.test"], make_body("null mx"))
    recs = wait_final(v, [(msgid, "x@nullmx.test")])[(msgid, "x@nullmx.test")]
    assert [r["type"] for r in recs] == ["bounced"], recs
    assert recs[0]["code"] == 556 and recs[0]["enh"] == "5.1.10", recs
    assert recs[0]["mx"] == "" and recs[0]["ip"] == "", recs
    time.sleep(0.5)
    assert host.sessions == 0, "connected to a domain with a null MX"
    assert v.list() == {}


def test_nxdomain_bounces(mailnet, volley_factory):
    v, _ = _net(mailnet, volley_factory, {"mx.other.test": "127.0.0.2"},
                mx=[("other.test", "mx.other.test", 10)])
    msgid = v.inject(SENDER, ["x@no-such-domain.test"], make_body("nxdomain"))
    recs = wait_final(v, [(msgid, "x@no-such-domain.test")])[(msgid, "x@no-such-domain.test")]
    assert [r["type"] for r in recs] == ["bounced"], recs
    assert recs[0]["code"] == 550 and recs[0]["enh"] == "5.1.2", recs
    assert recs[0]["domain"] == "no-such-domain.test"
    assert v.list() == {}


def test_mx_without_address_bounces(mailnet, volley_factory):
    # the only MX host does not exist: DNS_NOHOST, 5.4.4
    v, _ = _net(mailnet, volley_factory, {}, mx=[("noaddr.test", "mx.gone.test", 10)])
    msgid = v.inject(SENDER, ["x@noaddr.test"], make_body("no host"))
    recs = wait_final(v, [(msgid, "x@noaddr.test")])[(msgid, "x@noaddr.test")]
    assert [r["type"] for r in recs] == ["bounced"], recs
    assert recs[0]["code"] == 550 and recs[0]["enh"] == "5.4.4", recs


def test_implicit_mx(mailnet, volley_factory):
    v, (host,) = _net(mailnet, volley_factory, {"plain.test": "127.0.0.4"},
                      smtpd=[("127.0.0.4", "plain.test")])
    msgid = v.inject(SENDER, ["x@plain.test"], make_body("implicit mx"))
    recs = wait_final(v, [(msgid, "x@plain.test")])[(msgid, "x@plain.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["mx"] == "plain.test" and recs[0]["ip"] == "127.0.0.4", recs
    assert [e.rcpt_tos for e in host.envelopes] == [["x@plain.test"]]


def test_first_mx_unreachable(mailnet, volley_factory):
    v, (host,) = _net(mailnet, volley_factory,
                      {"mx1.fb.test": "127.0.0.99", "mx2.fb.test": "127.0.0.3"},
                      mx=[("fb.test", "mx1.fb.test", 10), ("fb.test", "mx2.fb.test", 20)],
                      smtpd=[("127.0.0.3", "mx2.fb.test")])
    msgid = v.inject(SENDER, ["x@fb.test"], make_body("fallback"))
    recs = wait_final(v, [(msgid, "x@fb.test")])[(msgid, "x@fb.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["mx"] == "mx2.fb.test" and recs[0]["ip"] == "127.0.0.3", recs
    assert recs[0]["attempt"] == 1, recs
    assert recs[0]["site"] == "mx1.fb.test,mx2.fb.test", recs
    assert [e.rcpt_tos for e in host.envelopes] == [["x@fb.test"]]


def test_mx_preference_order(mailnet, volley_factory):
    # both MX hosts are up: the more preferred one (lower number) gets the mail
    v, (low, high) = _net(mailnet, volley_factory,
                          {"mx1.pref.test": "127.0.0.2", "mx2.pref.test": "127.0.0.3"},
                          mx=[("pref.test", "mx2.pref.test", 20), ("pref.test", "mx1.pref.test", 5)],
                          smtpd=[("127.0.0.2", "mx1.pref.test"), ("127.0.0.3", "mx2.pref.test")])
    ids = [v.inject(SENDER, ["x%d@pref.test" % i], make_body("pref")) for i in range(3)]
    out = wait_final(v, [(m, "x%d@pref.test" % i) for i, m in enumerate(ids)])
    assert all(recs[-1]["mx"] == "mx1.pref.test" for recs in out.values()), out
    assert len(low.envelopes) == 3 and high.sessions == 0
    assert wait_acct(v, lambda r: r["type"] == "delivered", 3)


def test_dns_temporary_failure_defers(mailnet, volley_factory):
    # a DNS server that never answers: the lookup times out, the mail waits
    from volley_harness import dns_blackhole
    mailnet.start_dns(hosts={})
    v = volley_factory(mailnet.settings({"dns.servers": [dns_blackhole()],
                                         "dns.timeout_ms": 100, "dns.tries": 1,
                                         "delivery.retry_schedule": "1h"}))
    msgid = v.inject(SENDER, ["x@slow-dns.test"], make_body("dns tempfail"))
    d = wait_acct(v, lambda r: r["msgid"] == msgid, timeout=8)[0]
    assert d["type"] == "deferred", d
    assert d["code"] == 451 and d["enh"] == "4.4.3", d
    assert d["mx"] == "" and d["site"] == "", d
    assert list(v.list()) == [msgid]


def test_server_size_limit_fails_locally(mailnet, volley_factory):
    v, _ = _net(mailnet, volley_factory, {"mx.small.test": "127.0.0.2"},
                mx=[("small.test", "mx.small.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.small.test", data_size_limit=500)
    big = make_body("big", body_lines=["x" * 70] * 20)
    assert len(big) > 500
    msgid = v.inject(SENDER, ["x@small.test"], big)
    small = v.inject(SENDER, ["y@small.test"], make_body("small"))
    out = wait_final(v, [(msgid, "x@small.test"), (small, "y@small.test")])
    recs = out[(msgid, "x@small.test")]
    assert [r["type"] for r in recs] == ["bounced"], recs
    assert recs[0]["code"] == 552 and recs[0]["enh"] == "5.3.4", recs
    assert out[(small, "y@small.test")][0]["type"] == "delivered"
    # the big one was not even announced (SIZE known from EHLO)
    assert host.handler.rcpt_seen["x@small.test"] == 0
    assert [e.rcpt_tos for e in host.envelopes] == [["y@small.test"]]


def test_smtputf8(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.u8.test": "127.0.0.2", "mx.ascii.test": "127.0.0.3"},
                      mx=[("u8.test", "mx.u8.test", 10), ("ascii.test", "mx.ascii.test", 10)])
    u8 = mailnet.smtpd("127.0.0.2", "mx.u8.test")  # offers SMTPUTF8
    ascii_only = mailnet.smtpd("127.0.0.3", "mx.ascii.test", enable_SMTPUTF8=False)
    v = volley_factory(mailnet.settings())
    body = make_body("utf8", body_lines=["gr\u00fc\u00dfe"])
    sender = "j\u00f6rg@example.org"
    m1 = v.inject(sender, ["\u00fcser@u8.test"], body, params="SMTPUTF8 BODY=8BITMIME")
    m2 = v.inject(sender, ["\u00fcser@ascii.test"], body, params="SMTPUTF8 BODY=8BITMIME")
    out = wait_final(v, [(m1, "\u00fcser@u8.test"), (m2, "\u00fcser@ascii.test")])
    ok = out[(m1, "\u00fcser@u8.test")]
    assert [r["type"] for r in ok] == ["delivered"], ok
    env = u8.envelopes[0]
    assert env.mail_from == sender and env.rcpt_tos == ["\u00fcser@u8.test"]
    assert "SMTPUTF8" in env.mail_options, env.mail_options
    bad = out[(m2, "\u00fcser@ascii.test")]
    assert [r["type"] for r in bad] == ["bounced"], bad
    assert bad[0]["code"] == 553 and bad[0]["enh"] == "5.6.7", bad
    assert ascii_only.handler.mail_seen == 0


def test_multiline_reply_is_joined(mailnet, volley_factory):
    v, (host,) = _net(mailnet, volley_factory, {"mx.ml.test": "127.0.0.2"},
                      mx=[("ml.test", "mx.ml.test", 10)], smtpd=[("127.0.0.2", "mx.ml.test")])
    host.handler.rcpt_script = lambda addr, n: (
        "550-5.7.1 Message rejected by policy,\r\n550-5.7.1 see https://policy.test/x\r\n"
        "550 5.7.1 for details")
    msgid = v.inject(SENDER, ["x@ml.test"], make_body("multiline"))
    rec = wait_final(v, [(msgid, "x@ml.test")])[(msgid, "x@ml.test")][0]
    assert rec["type"] == "bounced" and rec["code"] == 550 and rec["enh"] == "5.7.1", rec
    assert rec["diag"] == "Message rejected by policy, see https://policy.test/x for details", rec


def test_null_sender(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.ns.test": "127.0.0.2"}, mx=[("ns.test", "mx.ns.test", 10)])
    host = mailnet.scripted("127.0.0.2", ["ok"], name="mx.ns.test")
    v = volley_factory(mailnet.settings())
    msgid = v.inject("", ["x@ns.test"], make_body("bounce-like"))
    rec = wait_final(v, [(msgid, "x@ns.test")])[(msgid, "x@ns.test")][0]
    assert rec["type"] == "delivered" and rec["sender"] == "", rec
    assert host.envelopes[0].mail_from == ""
    mails = [e for n, b, e in host.log if e.upper().startswith("MAIL")]
    assert len(mails) == 1 and mails[0].upper().startswith("MAIL FROM:<> "), mails


def test_server_without_pipelining(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx.np.test": "127.0.0.2"}, mx=[("np.test", "mx.np.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.np.test", pipelining=False)
    host.handler.rcpt_script = lambda addr, n: (
        "550 5.1.1 no such user" if addr.startswith("bad") else None)
    v = volley_factory(mailnet.settings())
    rcpts = ["a@np.test", "bad@np.test", "c@np.test"]
    msgid = v.inject(SENDER, rcpts, make_body("lock-step"))
    out = wait_final(v, [(msgid, a) for a in rcpts])
    assert [out[(msgid, a)][0]["type"] for a in rcpts] == ["delivered", "bounced", "delivered"]
    assert [e.rcpt_tos for e in host.envelopes] == [["a@np.test", "c@np.test"]]


def test_busy_banner_tries_next_mx(mailnet, volley_factory):
    mailnet.start_dns(hosts={"mx1.busy.test": "127.0.0.2", "mx2.busy.test": "127.0.0.3"},
                      mx=[("busy.test", "mx1.busy.test", 10), ("busy.test", "mx2.busy.test", 20)])
    busy = mailnet.scripted("127.0.0.2", ["busy-banner"], name="mx1.busy.test")
    host = mailnet.smtpd("127.0.0.3", "mx2.busy.test")
    v = volley_factory(mailnet.settings())
    msgid = v.inject(SENDER, ["x@busy.test"], make_body("busy"))
    recs = wait_final(v, [(msgid, "x@busy.test")])[(msgid, "x@busy.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["mx"] == "mx2.busy.test", recs
    assert busy.sessions == 1 and len(host.envelopes) == 1


def test_internationalized_domain(mailnet, volley_factory):
    # RFC 6531: a U-label domain is looked up as its A-label (xn--...)
    alabel = "b\u00fccher".encode("idna").decode() + ".test"
    mailnet.start_dns(hosts={"mx.idn.test": "127.0.0.2"}, mx=[(alabel, "mx.idn.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.idn.test")
    v = volley_factory(mailnet.settings())
    rcpt = "\u00fcser@b\u00fccher.test"
    msgid = v.inject("j\u00f6rg@example.org", [rcpt], make_body("idn"), params="SMTPUTF8")
    recs = wait_final(v, [(msgid, rcpt)])[(msgid, rcpt)]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["mx"] == "mx.idn.test", recs
    assert [e.rcpt_tos for e in host.envelopes] == [[rcpt]]


@pytest.mark.parametrize("stage, reply, want", [
    ("mail", "550 5.7.1 sender rejected by policy", ("bounced", 550, "5.7.1")),
    ("mail", "421 4.3.2 service shutting down", ("deferred", 421, "4.3.2")),
    ("data", "554 5.6.0 message content rejected", ("bounced", 554, "5.6.0")),
])
def test_transaction_reply_applies_to_every_recipient(mailnet, volley_factory, stage, reply,
                                                      want):
    mailnet.start_dns(hosts={"mx.tx.test": "127.0.0.2"}, mx=[("tx.test", "mx.tx.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.tx.test")
    state = {"n": 0}
    h = host.handler
    if stage == "mail":
        orig = h.handle_MAIL

        async def handle_MAIL(server, session, envelope, address, opts):
            state["n"] += 1
            if state["n"] == 1:
                return reply
            return await orig(server, session, envelope, address, opts)
        h.handle_MAIL = handle_MAIL  # aiosmtpd looks the hooks up per connection
    else:
        h.data_script = lambda env, n: reply if n == 1 else None
    v = volley_factory(mailnet.settings({"delivery.retry_schedule": "1s"}))
    rcpts = ["a@tx.test", "b@tx.test"]
    msgid = v.inject(SENDER, rcpts, make_body("txn " + stage))
    first = wait_acct(v, lambda r: r["msgid"] == msgid, 2)
    for r in first[:2]:
        assert (r["type"], r["code"], r["enh"]) == want, r
    if want[0] == "deferred":
        out = wait_final(v, [(msgid, a) for a in rcpts])
        assert all(recs[-1]["type"] == "delivered" for recs in out.values()), out
    else:
        assert v.list() == {}


def test_connection_reused_after_rejected_transaction(mailnet, volley_factory):
    # every recipient of the first message is refused; the server still holds its
    # MAIL, so the next transaction on the same connection needs RSET first
    mailnet.start_dns(hosts={"mx.rs.test": "127.0.0.2"}, mx=[("rs.test", "mx.rs.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.rs.test")
    host.handler.rcpt_script = lambda addr, n: (
        "550 5.1.1 no such user" if addr.startswith("bad") else None)
    v = volley_factory(mailnet.settings({"delivery.max_connections_per_site": 1,
                                         "delivery.idle_timeout": 10}))
    from mailnet import inject_many
    msgs = [(SENDER, ["bad%d@rs.test" % i], make_body("bad %d" % i)) for i in range(3)]
    msgs += [(SENDER, ["good%d@rs.test" % i], make_body("good %d" % i)) for i in range(3)]
    ids = inject_many(v, msgs)
    out = wait_final(v, [(m, rc[0]) for m, (_, rc, _) in zip(ids, msgs)])
    types = {k[1]: [r["type"] for r in recs] for k, recs in out.items()}
    assert types == {**{"bad%d@rs.test" % i: ["bounced"] for i in range(3)},
                     **{"good%d@rs.test" % i: ["delivered"] for i in range(3)}}, out
    assert len(host.envelopes) == 3
    assert host.sessions == 1, "the connection was not reused (%d sessions)" % host.sessions


def test_large_message_byte_exact(mailnet, volley_factory):
    # ~3 MB of lines of varied length, many starting with dots, so that dot-stuffing
    # meets every chunk boundary of the writer
    import random
    rnd = random.Random(7)
    lines = [b"Subject: large", b"Message-ID: <large@test>", b""]
    size = 0
    while size < 3 * 1024 * 1024:
        n = rnd.choice([0, 1, 2, 3, 50, 77, 500, 997, 998])
        line = bytes(rnd.choice(b".x.y\xc3\xa9.") for _ in range(n))
        if n and rnd.random() < 0.5:
            line = b"." + line[1:]
        lines.append(line)
        size += n + 2
    body = b"\r\n".join(lines) + b"\r\n"
    mailnet.start_dns(hosts={"mx.big.test": "127.0.0.2"}, mx=[("big.test", "mx.big.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.big.test")
    v = volley_factory(mailnet.settings())
    msgid = v.inject(SENDER, ["x@big.test"], body, params="BODY=8BITMIME")
    recs = wait_final(v, [(msgid, "x@big.test")], timeout=20)[(msgid, "x@big.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert len(host.envelopes) == 1
    got = host.envelopes[0].content
    assert len(got) == len(body) and got == body, "received %d bytes, sent %d" % (
        len(got), len(body))


def test_accept_only_node(mailnet, volley_factory):
    # delivery.enabled = false: a live MX, but mail stays queued until it is true
    mailnet.start_dns(hosts={"mx.ao.test": "127.0.0.2"}, mx=[("ao.test", "mx.ao.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.ao.test")
    v = volley_factory(mailnet.settings({"delivery.enabled": False}))
    msgid = v.inject(SENDER, ["x@ao.test"], make_body("accept only"))
    time.sleep(1.0)
    assert host.sessions == 0 and not acct_records(v)
    assert v.ctl({"cmd": "sites"}) == {"ok": True, "sites": []}
    s = v.show(msgid)["recipients"][0]
    assert s["state"] == "queued" and s["attempts"] == 0, s
    v.settings["delivery.enabled"] = True
    v.restart()
    recs = wait_final(v, [(msgid, "x@ao.test")])[(msgid, "x@ao.test")]
    assert [r["type"] for r in recs] == ["delivered"] and recs[0]["attempt"] == 1, recs
