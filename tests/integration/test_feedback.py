"""The feedback loop end to end: VERP return paths, synchronous and asynchronous
bounces, complaints, one-click and mailto unsubscribes, and suppression obeyed by
the queue and by later injections.

Real peers only: an aiosmtpd receiving host that refuses some recipients, the
feedback listener of volleyd spoken to with smtplib, and its HTTP endpoint with
urllib.  A DSN that arrives "later" is written here the way a remote MTA writes one
(multipart/report) and sent to the VERP address the receiving host saw.
"""

import email
import email.policy
import json
import re
import smtplib
import time
import urllib.error
import urllib.request
from pathlib import Path

from mailnet import acct_records, wait_final, wait_until
from volley_harness import expect, free_port, make_body

REPO = Path(__file__).resolve().parents[2]
SENDER = "news@sender.test"
BOUNCE_DOMAIN = "bounces.volley.test"
SECRET = "a-test-secret-of-some-length"


def _net(mailnet, volley_factory, overrides=None):
    mailnet.start_dns(hosts={"mx.fb.test": "127.0.0.2"}, mx=[("fb.test", "mx.fb.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.fb.test")
    fport, hport = free_port(), free_port()
    settings = {
        "feedback.secret": SECRET,
        "feedback.bounce_domain": BOUNCE_DOMAIN,
        "feedback.domains": ["fbl.volley.test"],
        "feedback.listen": ["127.0.0.1:%d" % fport],
        "feedback.http_listen": "127.0.0.1:%d" % hport,
        "feedback.unsubscribe_url": "http://127.0.0.1:%d/unsubscribe/" % hport,
        "feedback.classify_rules": str(REPO / "conf" / "bounce-rules.conf"),
        "delivery.retry_schedule": "1h",
    }
    settings.update(overrides or {})
    v = volley_factory(mailnet.settings(settings))
    v.fport, v.hport = fport, hport
    return v, host


def _feedback_send(v, rcpt, text, sender=""):
    """Hand one message to volleyd's feedback listener; (code, text) of the DATA reply
    or of the first refusal."""
    with smtplib.SMTP("127.0.0.1", v.fport, timeout=10) as s:
        s.ehlo("remote-mta.test")
        code, msg = s.mail(sender)
        assert code == 250, (code, msg)
        code, msg = s.rcpt(rcpt)
        if code != 250:
            return code, msg.decode()
        code, msg = s.data(text.encode() if isinstance(text, str) else text)
        return code, msg.decode()


def _check(v, addr, **kw):
    req = {"cmd": "suppress_check", "address": addr}
    req.update(kw)
    r = v.ctl(req)
    assert r["ok"], r
    return r


def _dsn(final_rcpt, status, diag, orig_headers):
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.fb.test>\r\n"
        "To: <%s>\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"B1\"\r\n"
        "\r\n"
        "--B1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n"
        "--B1\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.fb.test\r\n\r\n"
        "Final-Recipient: rfc822; %s\r\nAction: failed\r\nStatus: %s\r\n"
        "Remote-MTA: dns; store.fb.test\r\nDiagnostic-Code: smtp; %s\r\n"
        "--B1\r\nContent-Type: text/rfc822-headers\r\n\r\n%s"
        "--B1--\r\n" % ("%s", final_rcpt, status, diag, orig_headers))


def test_hard_bounces_suppress_purge_and_refuse(mailnet, volley_factory):
    v, host = _net(mailnet, volley_factory)
    # gone@ is deferred the first time (so a message to it stays queued), then the
    # mailbox turns out not to exist; late@ is accepted now and bounces later
    host.handler.rcpt_script = lambda a, n: (
        ("451 4.3.0 try again later" if n == 1 else
         "550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table" % a)
        if a.startswith("gone") else None)
    queued = v.inject(SENDER, ["gone@fb.test"], make_body("first"))
    wait_until(lambda: any(r.get("type") == "deferred" for r in acct_records(v)), 10, "deferral")
    second = v.inject(SENDER, ["gone@fb.test", "ok@fb.test"],
                      make_body("second", extra_headers=("X-Volley-Campaign: spring",)))
    out = wait_final(v, [(second, "gone@fb.test"), (second, "ok@fb.test")], timeout=15)
    b = out[(second, "gone@fb.test")][-1]
    assert b["type"] == "bounced" and b["category"] == "bad-mailbox" and b["hard"] is True, b
    # the suppression purged the first message's queued copy at once, with a record
    wait_until(lambda: queued not in v.list(), 10, "purge of the queued message")
    sup = [r for r in acct_records(v) if r["type"] == "suppressed"]
    assert [(r["msgid"], r["recipient"], r["stage"]) for r in sup] == \
        [(queued, "gone@fb.test", "queue")], sup
    r = _check(v, "Gone@FB.test")
    assert r["suppressed"] and r["entry"]["reason"] == "hard-bounce", r
    # and a new injection to the address is refused at RCPT, precisely
    with v.session() as c:
        expect(c.mail(SENDER), "250 2.1.0")
        expect(c.rcpt("gone@fb.test"), "550 5.7.1", "suppressed")
        expect(c.rcpt("ok@fb.test"), "250 2.1.5")
    v.assert_consistent()

    # every outgoing message had a VERP return path on the bounce domain
    froms = {e.mail_from for e in host.handler.envelopes}
    assert all(re.fullmatch(r"bounce\+[a-z2-7]{37}@" + re.escape(BOUNCE_DOMAIN), f)
               for f in froms), froms

    # late@ is accepted; a DSN arrives later at the VERP address it was sent from
    late = v.inject(SENDER, ["late@fb.test"],
                    make_body("late", extra_headers=("X-Volley-Campaign: spring",)))
    wait_final(v, [(late, "late@fb.test")], timeout=10)
    env = [e for e in host.handler.envelopes if "late@fb.test" in e.rcpt_tos][0]
    verp = env.mail_from
    dsn = _dsn("late@fb.test", "5.1.1", "550 5.1.1 The email account that you tried to "
               "reach does not exist", "Subject: late\r\n\r\n")
    # the same DSN, saved: bounce parse names its message and (the daemon being
    # there to ask) its campaign
    saved = Path(v.tmp) / "late.eml"
    saved.write_bytes((dsn % verp).encode())
    r = v.volleyctl("bounce", "parse", "--json", saved)
    assert r.returncode == 0, r
    row = json.loads(r.stdout.decode().splitlines()[0])
    assert (row["kind"], row["recipient"], row["status"], row["category"], row["hard"],
            row["msgid"], row["campaign"]) == ("bounce", "late@fb.test", "5.1.1", "bad-mailbox",
                                               True, late, "spring"), row
    code, msg = _feedback_send(v, verp, dsn % verp)
    assert code == 250, (code, msg)
    rec = [r for r in acct_records(v) if r["type"] == "bounced" and r.get("async")]
    assert len(rec) == 1, rec
    assert (rec[0]["msgid"], rec[0]["recipient"], rec[0]["campaign"], rec[0]["category"],
            rec[0]["hard"]) == (late, "late@fb.test", "spring", "bad-mailbox", True), rec
    assert _check(v, "late@fb.test")["suppressed"]

    # a forged or altered token, and mail for other domains, are refused
    forged = verp[:8] + ("a" if verp[8] != "a" else "b") + verp[9:]
    code, msg = _feedback_send(v, forged, dsn % forged)
    assert code == 550 and "5.7.1" in msg and "forged" in msg.lower(), (code, msg)
    code, msg = _feedback_send(v, "someone@elsewhere.test", "Subject: x\r\n\r\nx\r\n")
    assert code == 550 and "Relay access denied" in msg, (code, msg)
    # nothing was suppressed by them
    assert len([r for r in acct_records(v) if r["type"] == "bounced" and r.get("async")]) == 1


def test_one_click_and_mailto_unsubscribe(mailnet, volley_factory):
    v, host = _net(mailnet, volley_factory)
    news = ("X-Volley-Campaign: issue-42", "X-Volley-List: news")
    m1 = v.inject(SENDER, ["ann@fb.test", "bob@fb.test"], make_body("news", extra_headers=news))
    wait_final(v, [(m1, "ann@fb.test"), (m1, "bob@fb.test")], timeout=10)
    by_rcpt = {e.rcpt_tos[0]: e for e in host.handler.envelopes}
    assert len(by_rcpt["ann@fb.test"].rcpt_tos) == 1  # per-recipient headers: one each
    msg = email.message_from_bytes(by_rcpt["ann@fb.test"].content, policy=email.policy.default)
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Volley-List"] is None
    lu = str(msg["List-Unsubscribe"])
    url = re.search(r"<(http://[^>]+)>", lu).group(1)
    mailto = re.search(r"<mailto:([^>]+)>", lu).group(1)
    assert mailto.startswith("unsubscribe+") and mailto.endswith("@" + BOUNCE_DOMAIN), lu

    # GET shows a confirmation page and unsubscribes no one (link scanners fetch it)
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.status == 200 and b"<form" in r.read().lower()
    assert not _check(v, "ann@fb.test", list="news")["suppressed"]
    # the RFC 8058 POST does, for that list, and answers once it is committed
    req = urllib.request.Request(url, data=b"List-Unsubscribe=One-Click", method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 200
    r = _check(v, "ann@fb.test", list="news")
    assert r["suppressed"] and r["entry"]["reason"] == "unsubscribe", r
    assert r["entry"]["scope"] == "list:news", r
    assert not _check(v, "ann@fb.test")["suppressed"]  # other mail still goes
    rec = [r for r in acct_records(v) if r["type"] == "unsubscribed"]
    assert [(x["recipient"], x["list"], x["method"], x["msgid"]) for x in rec] == \
        [("ann@fb.test", "news", "one-click", m1)], rec
    # a forged link is refused and changes nothing
    bad = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    try:
        urllib.request.urlopen(urllib.request.Request(
            bad, data=b"List-Unsubscribe=One-Click", method="POST",
            headers={"Content-Type": "application/x-www-form-urlencoded"}), timeout=10)
        raise AssertionError("forged token accepted")
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code

    # the list's next issue: ann is dropped at injection, with a record; bob still gets it
    m2 = v.inject(SENDER, ["ann@fb.test", "bob@fb.test"], make_body("news 2", extra_headers=news))
    wait_final(v, [(m2, "bob@fb.test")], timeout=10)
    drop = [r for r in acct_records(v) if r["type"] == "suppressed"]
    assert [(r["msgid"], r["recipient"], r["stage"]) for r in drop] == \
        [(m2, "ann@fb.test", "injection")], drop
    assert [e.rcpt_tos for e in host.handler.envelopes].count(["ann@fb.test"]) == 1

    # bob unsubscribes by mail: the mailto address from his own copy
    bob = email.message_from_bytes(by_rcpt["bob@fb.test"].content, policy=email.policy.default)
    bob_mailto = re.search(r"<mailto:([^>]+)>", str(bob["List-Unsubscribe"])).group(1)
    code, text = _feedback_send(v, bob_mailto, "From: bob@fb.test\r\nSubject: unsubscribe\r\n\r\n"
                                "unsubscribe\r\n", sender="bob@fb.test")
    assert code == 250, (code, text)
    r = _check(v, "bob@fb.test", list="news")
    assert r["suppressed"] and r["entry"]["reason"] == "unsubscribe", r


def test_arf_complaint_suppresses_and_names_the_campaign(mailnet, volley_factory):
    v, host = _net(mailnet, volley_factory)
    m = v.inject(SENDER, ["carl@fb.test"],
                 make_body("promo", extra_headers=("X-Volley-Campaign: promo-9",)))
    wait_final(v, [(m, "carl@fb.test")], timeout=10)
    verp = host.handler.envelopes[0].mail_from
    arf = (
        "From: feedback@fbl.provider.test\r\nTo: fbl@fbl.volley.test\r\n"
        "Subject: FW: promo\r\nMIME-Version: 1.0\r\n"
        "Content-Type: multipart/report; report-type=feedback-report; boundary=\"A\"\r\n\r\n"
        "--A\r\nContent-Type: text/plain\r\n\r\nThis is an abuse report.\r\n"
        "--A\r\nContent-Type: message/feedback-report\r\n\r\n"
        "Feedback-Type: abuse\r\nUser-Agent: ProviderFBL/1.0\r\nVersion: 1\r\n"
        "Original-Mail-From: <%s>\r\nOriginal-Rcpt-To: <carl@fb.test>\r\n"
        "Source-IP: 127.0.0.1\r\nReported-Domain: sender.test\r\n\r\n"
        "--A\r\nContent-Type: message/rfc822\r\n\r\n"
        "Return-Path: <%s>\r\nFrom: news@sender.test\r\nTo: carl@fb.test\r\n"
        "Subject: promo\r\n\r\nbuy\r\n--A--\r\n" % (verp, verp))
    code, msg = _feedback_send(v, "fbl@fbl.volley.test", arf)
    assert code == 250, (code, msg)
    rec = [r for r in acct_records(v) if r["type"] == "complaint"]
    assert len(rec) == 1, rec
    assert (rec[0]["recipient"], rec[0]["msgid"], rec[0]["campaign"], rec[0]["feedback_type"]) == \
        ("carl@fb.test", m, "promo-9", "abuse"), rec
    r = _check(v, "carl@fb.test")
    assert r["suppressed"] and r["entry"]["reason"] == "complaint", r
    # an auto-reply is neither a bounce nor a complaint
    code, msg = _feedback_send(v, verp, "From: carl@fb.test\r\nTo: <%s>\r\n"
                               "Auto-Submitted: auto-replied\r\nSubject: Out of Office\r\n\r\n"
                               "I am away.\r\n" % verp)
    assert code == 250
    assert not [r for r in acct_records(v) if r["type"] == "bounced"]
    ign = [r for r in v.log_records() if r.get("event") == "feedback_ignored"]
    assert ign and ign[-1]["kind"] == "auto-reply", ign


def test_repeated_soft_bounces_suppress(mailnet, volley_factory):
    v, host = _net(mailnet, volley_factory, {"feedback.soft_bounce_limit": 2})
    host.handler.rcpt_script = lambda a, n: (
        "552 5.2.2 <%s>: mailbox full" % a if a.startswith("full") else None)
    first = v.inject(SENDER, ["full@fb.test"], make_body("one"))
    out = wait_final(v, [(first, "full@fb.test")], timeout=10)
    rec = out[(first, "full@fb.test")][-1]
    assert rec["type"] == "bounced" and rec["category"] == "quota-issues" and not rec["hard"], rec
    assert not _check(v, "full@fb.test")["suppressed"]  # one soft bounce: not yet
    second = v.inject(SENDER, ["full@fb.test"], make_body("two"))
    wait_final(v, [(second, "full@fb.test")], timeout=10)
    wait_until(lambda: _check(v, "full@fb.test")["suppressed"], 5, "soft-bounce suppression")
    assert _check(v, "full@fb.test")["entry"]["reason"] == "soft-bounce"
