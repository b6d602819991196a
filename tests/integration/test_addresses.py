"""Envelope addresses: syntax, length limits, SMTPUTF8, null paths."""

import pytest

from volley_harness import expect, make_body, queued_id

BAD_SYNTAX = [
    "FROM:a@example.com",               # no brackets
    "FROM:<a@-bad-.example>",            # label starts with a hyphen
    "FROM:<a@exa_mple.com>",             # underscore in domain
    "FROM:<a@example..com>",             # empty label
    "FROM:<a@>",                         # missing domain
    "FROM:<a>",                          # missing domain
    "FROM:<a b@example.com>",            # space in local part
    "FROM:<.a@example.com>",             # leading dot
    "FROM:<a@example.com",               # unclosed
    "FROM:",                             # nothing
    "FROM:<a@[1.2.3]>",                  # bad address literal
]


@pytest.mark.parametrize("arg", BAD_SYNTAX)
def test_bad_sender_syntax(volley, arg):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.cmd("MAIL " + arg), "501 5.1.7")
        # nothing started: RCPT is out of sequence, a good MAIL works
        expect(c.rcpt("r@example.com"), "503 5.5.1")
        msgid = queued_id(c.send_message("good@example.org", ["r@example.com"],
                                         make_body("after bad mail")))
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {msgid}


@pytest.mark.parametrize("arg", [a.replace("FROM:", "TO:") for a in BAD_SYNTAX])
def test_bad_recipient_syntax(volley, arg):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.cmd("RCPT " + arg), "501 5.1.3")
        # the transaction goes on with the good recipient only
        expect(c.rcpt("good@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(make_body("bad rcpt") + b".\r\n")
        msgid = queued_id(c.read_reply())
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {msgid}
    assert now[msgid][3] == ["good@example.com"]


def test_local_part_length(volley):
    snap = volley.seed()
    l64, l65 = "a" * 64, "b" * 65
    with volley.session() as c:
        expect(c.mail(l65 + "@example.org"), "553 5.1.7")
        expect(c.mail(l64 + "@example.org"), "250 2.1.0")
        expect(c.rcpt(l65 + "@example.com"), "553 5.1.3")
        expect(c.rcpt(l64 + "@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(make_body("64") + b".\r\n")
        msgid = queued_id(c.read_reply())
    now = volley.assert_intact(snap, allow_new=True)
    assert now[msgid][1] == l64 + "@example.org"
    assert now[msgid][3] == [l64 + "@example.com"]


def test_domain_and_path_length(volley):
    label = "d" * 63
    dom253 = ".".join([label] * 3 + ["e" * 61])
    dom256 = ".".join([label] * 4)
    assert len(dom253) == 253 and len(dom256) == 255 and len(dom256 + "x") == 256
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("x@" + "f" * 64 + ".example"), "501 5.1.3")   # a label of 64
        expect(c.rcpt("x@" + dom256 + "x"), "553 5.1.3")            # domain of 256
        expect(c.rcpt("xy@" + dom253), "250 2.1.5")                 # path of 256
        expect(c.rcpt("xyz@" + dom253), "553 5.1.3")                # path of 257
        expect(c.cmd("DATA"), "354")
        c.send(make_body("long domain") + b".\r\n")
        msgid = queued_id(c.read_reply())
    assert [r["address"] for r in volley.show(msgid)["recipients"]] == ["xy@" + dom253]


def test_non_ascii_needs_smtputf8(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("j\u00f6rg@example.org"), "553 5.6.7")
        expect(c.mail("s@b\u00fccher.example"), "553 5.6.7")
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("j\u00f6rg@example.com"), "553 5.6.7")
        expect(c.rcpt("r@b\u00fccher.example"), "553 5.6.7")
        expect(c.cmd("RSET"), "250 2.0.0")
    volley.assert_intact(snap)
    with volley.session() as c:
        expect(c.mail("j\u00f6rg@example.org", "SMTPUTF8"), "250 2.1.0")
        expect(c.rcpt("\u00fcser@B\u00fccher.Example"), "250 2.1.5")
        expect(c.rcpt("plain@example.com"), "250 2.1.5")
        # malformed UTF-8 is refused even with SMTPUTF8
        expect(c.cmd(b"RCPT TO:<bad\xc3@example.com>"), "553 5.6.7")
        expect(c.cmd("DATA"), "354")
        body = make_body("utf8 \u2713")
        c.send(body + b".\r\n")
        msgid = queued_id(c.read_reply())
    now = volley.assert_intact(snap, allow_new=True)
    assert now[msgid][0] == body
    assert now[msgid][1] == "j\u00f6rg@example.org"
    # ASCII letters of the domain are lowercased; the rest kept
    assert now[msgid][3] == ["\u00fcser@b\u00fccher.example", "plain@example.com"]


def test_null_sender_and_null_recipient(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.cmd("MAIL FROM:<>"), "250 2.1.0")
        expect(c.cmd("RCPT TO:<>"), "501 5.1.3")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        body = make_body("bounce")
        c.send(body + b".\r\n")
        msgid = queued_id(c.read_reply())
    now = volley.assert_intact(snap, allow_new=True)
    assert now[msgid] == (body, "", "", ["r@example.com"])
    assert volley.list()[msgid]["sender"] == ""


def test_postmaster_without_domain(volley):
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("Postmaster"), "250 2.1.5")
        expect(c.rcpt("notpostmaster"), "501 5.1.3")
        expect(c.cmd("DATA"), "354")
        c.send(make_body("pm") + b".\r\n")
        msgid = queued_id(c.read_reply())
    assert [r["address"] for r in volley.show(msgid)["recipients"]] == ["postmaster@volley.test"]


def test_source_route_dropped_and_literals(volley):
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.cmd("RCPT TO:<@relay.example,@other.example:u@Dest.Example>"), "250 2.1.5")
        expect(c.rcpt("v@[192.0.2.1]"), "250 2.1.5")
        expect(c.rcpt("w@[IPv6:2001:db8::1]"), "250 2.1.5")
        expect(c.rcpt('"quoted local"@example.com'), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(make_body("routes") + b".\r\n")
        msgid = queued_id(c.read_reply())
    assert [r["address"] for r in volley.show(msgid)["recipients"]] == [
        "u@dest.example", "v@[192.0.2.1]", "w@[IPv6:2001:db8::1]", '"quoted local"@example.com']


def test_mail_parameters(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org", "SIZE=abc"), "501 5.5.4")
        expect(c.mail("s@example.org", "BODY=BINARYMIME"), "501 5.5.4")
        expect(c.mail("s@example.org", "SMTPUTF8=yes"), "501 5.5.4")
        expect(c.mail("s@example.org", "FOO=bar"), "555 5.5.4")
        expect(c.mail("s@example.org", "SIZE=100 BODY=7BIT"), "250 2.1.0")
        expect(c.cmd("RCPT TO:<r@example.com> NOTIFY=NEVER"), "555 5.5.4")
    with volley.connect() as c:
        c.greeting()
        expect(c.cmd("HELO client.test"), "250")
        expect(c.mail("s@example.org", "SIZE=100"), "555 5.5.4")  # parameters need EHLO
        expect(c.mail("s@example.org"), "250 2.1.0")
    volley.assert_intact(snap)
