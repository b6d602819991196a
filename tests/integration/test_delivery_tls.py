"""Delivery: STARTTLS policies off / opportunistic / required."""

import re
import ssl
import time

from mailnet import acct_records, wait_acct, wait_final
from volley_harness import make_body

SENDER = "bulk-sender@example.org"


def _tls_context(cert, sni=None):
    """A server context; the names clients ask for (SNI) are appended to sni."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cert[0]), str(cert[1]))
    if sni is not None:
        def note(sslobj, name, context):
            sni.append(name)
        ctx.sni_callback = note
    return ctx


def _world(mailnet):
    mailnet.start_dns(hosts={"mx.tls.test": "127.0.0.2"}, mx=[("tls.test", "mx.tls.test", 10)])


def _assert_tls_record(rec):
    assert re.fullmatch(r"TLSv1\.[23]", rec["tls"]), rec
    assert rec["cipher"], rec


def test_opportunistic_uses_starttls(mailnet, volley_factory, tls_cert):
    _world(mailnet)
    sni = []
    host = mailnet.smtpd("127.0.0.2", "mx.tls.test", tls_context=_tls_context(tls_cert, sni))
    v = volley_factory(mailnet.settings({"delivery.tls": "opportunistic"}))
    body = make_body("tls opportunistic")
    msgid = v.inject(SENDER, ["x@tls.test"], body)
    recs = wait_final(v, [(msgid, "x@tls.test")])[(msgid, "x@tls.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    _assert_tls_record(recs[0])
    assert len(host.envelopes) == 1
    assert host.envelopes[0].tls, "the host saw the message in plain text"
    assert host.envelopes[0].content == body
    assert not [r for r in v.log_records() if r.get("event") == "tls_fallback"]
    assert sni == ["mx.tls.test"], "SNI: %r" % sni


def test_tls_off_does_not_starttls(mailnet, volley_factory, tls_cert):
    _world(mailnet)
    host = mailnet.smtpd("127.0.0.2", "mx.tls.test", tls_context=_tls_context(tls_cert))
    v = volley_factory(mailnet.settings({"delivery.tls": "off"}))
    msgid = v.inject(SENDER, ["x@tls.test"], make_body("tls off"))
    recs = wait_final(v, [(msgid, "x@tls.test")])[(msgid, "x@tls.test")]
    assert recs[0]["type"] == "delivered" and recs[0]["tls"] == "" and recs[0]["cipher"] == ""
    assert not host.envelopes[0].tls


def test_required_without_starttls_defers(mailnet, volley_factory):
    _world(mailnet)
    host = mailnet.smtpd("127.0.0.2", "mx.tls.test")  # no STARTTLS offered
    v = volley_factory(mailnet.settings({"delivery.tls": "required"}))
    msgid = v.inject(SENDER, ["x@tls.test"], make_body("tls required, not offered"))
    d = wait_acct(v, lambda r: r["msgid"] == msgid)[0]
    assert d["type"] == "deferred", d
    assert d["code"] == 0 or 400 <= d["code"] < 500, d
    assert d["enh"].startswith("4."), d
    time.sleep(2.5)  # a few more attempts (retry 1 s): none may send the message
    recs = acct_records(v)
    assert {r["type"] for r in recs} == {"deferred"}, recs
    assert host.sessions >= 1, "never even connected"
    assert host.handler.envelopes == [] and host.handler.rcpt_seen == {}, \
        "sent mail in plain text although TLS is required"
    assert list(v.list()) == [msgid]


def test_required_with_starttls_delivers(mailnet, volley_factory, tls_cert):
    _world(mailnet)
    host = mailnet.smtpd("127.0.0.2", "mx.tls.test", tls_context=_tls_context(tls_cert))
    v = volley_factory(mailnet.settings({"delivery.tls": "required"}))
    msgid = v.inject(SENDER, ["x@tls.test"], make_body("tls required"))
    recs = wait_final(v, [(msgid, "x@tls.test")])[(msgid, "x@tls.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    _assert_tls_record(recs[0])
    assert host.envelopes[0].tls


def test_opportunistic_handshake_failure_falls_back(mailnet, volley_factory):
    _world(mailnet)
    # offers STARTTLS, answers it with 220 and then garbage (every connection)
    host = mailnet.scripted("127.0.0.2", ["tls-garbage"], name="mx.tls.test")
    v = volley_factory(mailnet.settings({"delivery.tls": "opportunistic"}))
    body = make_body("tls fallback")
    msgid = v.inject(SENDER, ["x@tls.test"], body)
    recs = wait_final(v, [(msgid, "x@tls.test")])[(msgid, "x@tls.test")]
    assert [r["type"] for r in recs] == ["delivered"], recs
    assert recs[0]["tls"] == "" and recs[0]["cipher"] == "", recs
    assert recs[0]["attempt"] == 1, recs
    assert len(host.envelopes) == 1 and host.envelopes[0].content == body
    fb = [r for r in v.log_records() if r.get("event") == "tls_fallback"]
    assert fb, "no tls_fallback record in volleyd.log"
    assert fb[0].get("mx") == "mx.tls.test" and fb[0].get("ip") == "127.0.0.2", fb
    # the plain-text session did not try STARTTLS again
    starttls = [(n, e) for n, b, e in host.log if e.upper() == "STARTTLS"]
    assert len(starttls) == 1, host.log


def test_required_with_failed_handshake_defers(mailnet, volley_factory):
    _world(mailnet)
    host = mailnet.scripted("127.0.0.2", ["tls-garbage"], name="mx.tls.test")
    v = volley_factory(mailnet.settings({"delivery.tls": "required"}))
    msgid = v.inject(SENDER, ["x@tls.test"], make_body("tls required, broken"))
    d = wait_acct(v, lambda r: r["msgid"] == msgid)[0]
    assert d["type"] == "deferred", d
    time.sleep(1.5)
    assert {r["type"] for r in acct_records(v)} == {"deferred"}
    assert not host.envelopes
    assert not [e for n, b, e in host.log if e.upper().startswith("MAIL")], \
        "sent mail in plain text although TLS is required"
    assert not [r for r in v.log_records() if r.get("event") == "tls_fallback"]
