"""Delivery: the optional RFC 3464 notice (delivery.dsn) to the envelope sender.

The notice is a real message: volleyd queues it with a null reverse-path and
delivers it by MX lookup to the sender's domain, where an aiosmtpd host records
it; Python's email package parses the multipart/report.
"""

import email
import email.policy
import time

from mailnet import acct_records, wait_acct, wait_final
from volley_harness import make_body

SENDER = "campaigns@sender.test"


def _net(mailnet, volley_factory, overrides=None):
    mailnet.start_dns(hosts={"mx.hard.test": "127.0.0.2", "mx.sender.test": "127.0.0.3",
                             "mx.soft.test": "127.0.0.4"},
                      mx=[("hard.test", "mx.hard.test", 10), ("sender.test", "mx.sender.test", 10),
                          ("soft.test", "mx.soft.test", 10)])
    hard = mailnet.smtpd("127.0.0.2", "mx.hard.test")
    hard.handler.rcpt_script = lambda addr, n: (
        "550 5.1.1 <%s>: Recipient address rejected: User unknown" % addr
        if addr.startswith("bad") else None)
    home = mailnet.smtpd("127.0.0.3", "mx.sender.test")
    soft = mailnet.smtpd("127.0.0.4", "mx.soft.test")
    soft.handler.rcpt_script = lambda addr, n: "451 4.2.1 mailbox busy, try later"
    settings = {"delivery.dsn": True}
    settings.update(overrides or {})
    v = volley_factory(mailnet.settings(settings))
    return v, hard, home, soft


def _reports(msg):
    """{final recipient: {field: value}} from a parsed multipart/report."""
    assert msg.get_content_type() == "multipart/report", msg.get_content_type()
    assert msg.get_param("report-type") == "delivery-status"
    parts = msg.get_payload()
    assert [p.get_content_type() for p in parts] == [
        "text/plain", "message/delivery-status", "text/rfc822-headers"], parts
    status = parts[1]
    # message/delivery-status: the per-message block, then one block per recipient
    blocks = [p for p in status.get_payload()]
    per_msg, per_rcpt = blocks[0], blocks[1:]
    out = {}
    for b in per_rcpt:
        out[b["Final-Recipient"].split(";", 1)[1].strip()] = {k: v for k, v in b.items()}
    return per_msg, out, parts


def _wait_dsns(home, count, timeout=15):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(home.handler.envelopes) >= count:
            return home.handler.envelopes
        time.sleep(0.05)
    raise AssertionError("%d notices arrived, want %d" % (len(home.handler.envelopes), count))


def test_bounce_sends_a_delivery_status_notification(mailnet, volley_factory):
    v, hard, home, _ = _net(mailnet, volley_factory)
    body = make_body("to be bounced", extra_headers=["X-Tracking: abc-123"],
                     body_lines=["line 1 of the body"])
    msgid = v.inject(SENDER, ["good@hard.test", "bad1@hard.test", "bad2@hard.test"], body)
    wait_final(v, [(msgid, a) for a in ("good@hard.test", "bad1@hard.test", "bad2@hard.test")])
    (env,) = _wait_dsns(home, 1)
    assert env.mail_from in ("", "<>"), "a notice must have a null reverse-path"
    assert env.rcpt_tos == [SENDER]
    msg = email.message_from_bytes(env.content, policy=email.policy.compat32)
    assert msg["To"] == "<%s>" % SENDER
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    per_msg, rcpts, parts = _reports(msg)
    assert per_msg["Reporting-MTA"].startswith("dns;")
    assert per_msg["X-Volley-Queue-ID"] == msgid
    assert set(rcpts) == {"bad1@hard.test", "bad2@hard.test"}, rcpts
    for addr, f in rcpts.items():
        assert f["Action"] == "failed" and f["Status"] == "5.1.1", f
        assert f["Remote-MTA"] == "dns; mx.hard.test", f
        assert f["Diagnostic-Code"].startswith("smtp; 550"), f
        assert "User unknown" in f["Diagnostic-Code"], f
    # the original header section comes back, the body does not
    headers = parts[2].get_payload()
    assert "X-Tracking: abc-123" in headers and "Subject: to be bounced" in headers
    assert "line 1" not in headers
    # the notice itself is accounted for like any message, with a null sender
    recs = wait_acct(v, lambda r: r["type"] == "delivered" and r["recipient"] == SENDER)
    assert recs[0]["sender"] == ""
    assert v.list() == {}


def test_no_notice_without_dsn_setting_or_for_null_sender(mailnet, volley_factory):
    v, hard, home, _ = _net(mailnet, volley_factory, {"delivery.dsn": False})
    m1 = v.inject(SENDER, ["bad@hard.test"], make_body("dsn off"))
    wait_final(v, [(m1, "bad@hard.test")])
    time.sleep(1.0)
    assert home.handler.envelopes == []
    assert [r["type"] for r in acct_records(v)] == ["bounced"]


def test_null_sender_bounce_gets_no_notice(mailnet, volley_factory):
    v, hard, home, _ = _net(mailnet, volley_factory)
    m1 = v.inject("", ["bad@hard.test"], make_body("a bounce of a bounce"))
    wait_final(v, [(m1, "bad@hard.test")])
    time.sleep(1.0)
    assert home.handler.envelopes == []
    assert [r["type"] for r in acct_records(v)] == ["bounced"]


def test_expiry_sends_a_notice(mailnet, volley_factory):
    v, _, home, soft = _net(mailnet, volley_factory,
                            {"delivery.max_age": 2, "delivery.retry_schedule": "1s"})
    msgid = v.inject(SENDER, ["someone@soft.test"], make_body("never accepted"))
    out = wait_final(v, [(msgid, "someone@soft.test")], timeout=15)
    recs = out[(msgid, "someone@soft.test")]
    assert recs[-1]["type"] == "expired", recs
    (env,) = _wait_dsns(home, 1)
    msg = email.message_from_bytes(env.content, policy=email.policy.compat32)
    _, rcpts, parts = _reports(msg)
    f = rcpts["someone@soft.test"]
    assert f["Action"] == "failed" and f["Status"] == "4.4.7", f
    assert "mailbox busy" in f["Diagnostic-Code"], f
    assert "expired" in parts[0].get_payload().lower()


def test_remote_text_cannot_forge_fields(mailnet, volley_factory):
    # a hostile reply text tries to start new fields in the notice; the receiving
    # host only ever sees it inside Diagnostic-Code
    v, hard, home, _ = _net(mailnet, volley_factory)
    hard.handler.rcpt_script = lambda addr, n: (
        "550 5.7.1 denied\tStatus: 2.0.0 Action: delivered")
    msgid = v.inject(SENDER, ["victim@hard.test"], make_body("hostile"))
    wait_final(v, [(msgid, "victim@hard.test")])
    (env,) = _wait_dsns(home, 1)
    msg = email.message_from_bytes(env.content, policy=email.policy.compat32)
    _, rcpts, _ = _reports(msg)
    f = rcpts["victim@hard.test"]
    assert f["Action"] == "failed" and f["Status"] == "5.7.1", f
    assert all(ord(ch) < 128 for ch in env.content.decode("latin-1"))
