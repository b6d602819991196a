"""Protocol faults: bare CR/LF, command order, error limit, pregreet, timeouts."""

import time

import pytest

from volley_harness import dot_stuff, expect, make_body, queued_id


# ---------------------------------------------------------------- bare CR / LF

def test_bare_lf_in_command(volley):
    snap = volley.seed()
    with volley.session() as c:
        c.send(b"NOOP\n")
        expect(c.read_reply(), "500 5.5.2")
        c.send(b"MAIL FROM:<s@example.org>\n")
        expect(c.read_reply(), "500 5.5.2")
        expect(c.rcpt("r@example.com"), "503 5.5.1")   # the bare-LF MAIL did not count
        expect(c.cmd(b"NO\rOP"), "500 5.5.2")            # bare CR inside
        expect(c.cmd(b"NOOP\x00"), "500 5.5.2")          # NUL
        expect(c.cmd("NOOP"), "250 2.0.0")
    volley.assert_intact(snap)


@pytest.mark.parametrize("text", [
    b"Subject: lf\r\n\r\nline one\nline two\r\n",        # bare LF in the body
    b"Subject: cr\r\n\r\nline one\rline two\r\n",        # bare CR in the body
    b"Subject: lf\nX: y\r\n\r\nbody\r\n",                 # bare LF in the header
    b"Subject: crcr\r\n\r\nline\r\r\n",                   # CR CR LF
    b"Subject: end\r\n\r\nlast line without CRLF\n",     # bare LF right before the dot
])
def test_bare_cr_lf_in_message(volley, text):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(text + b".\r\n")
        expect(c.read_reply(), "550 5.6.0")
        # the session is in command state again
        expect(c.cmd("NOOP"), "250 2.0.0")
        ok = make_body("after bare")
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], ok))
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {msgid}


def test_lf_dot_lf_does_not_smuggle(volley):
    """SMTP smuggling: <LF>.<LF> (or <LF>.<CR><LF>) inside the text must not end the
    message such that what follows becomes a second, accepted message.  Either the dot
    is not an end of data (and the whole text is one refused/accepted message) or the
    message is refused - but no message with the smuggled sender may be stored."""
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(b"Subject: smuggle\r\n\r\nfirst\n.\n"
               b"MAIL FROM:<smuggled@evil.example>\r\nRCPT TO:<victim@example.com>\r\n"
               b"DATA\r\nSubject: smuggled\r\n\r\nhidden\r\n.\r\n")
        replies = []
        c.settimeout(1.5)
        try:
            while True:
                replies.append(c.read_reply())
        except Exception:
            pass
    now = volley.snapshot()
    for msgid in set(now) - set(snap):
        assert now[msgid][1] != "smuggled@evil.example", "smuggled message stored: %r" % (
            replies,)
    volley.assert_consistent()


# ---------------------------------------------------------------- command order

def test_commands_out_of_order(volley):
    snap = volley.seed()
    with volley.connect() as c:
        c.greeting()
        expect(c.mail("s@example.org"), "503 5.5.1")       # before EHLO
        expect(c.rcpt("r@example.com"), "503 5.5.1")       # before MAIL
        expect(c.cmd("DATA"), "503 5.5.1")
        c.ehlo()
        expect(c.rcpt("r@example.com"), "503 5.5.1")       # RCPT before MAIL
        expect(c.cmd("DATA"), "503 5.5.1")                 # DATA before MAIL
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.cmd("DATA"), "503 5.5.1")                 # DATA before RCPT
        expect(c.mail("t@example.org"), "503 5.5.1")       # nested MAIL
        expect(c.cmd("XYZZY"), "500 5.5.2")                # unknown
        expect(c.cmd("MAILFROM:<s@example.org>"), "500 5.5.2")
        expect(c.cmd("EHLO"), "501 5.5.4")
        expect(c.cmd("BDAT 10 LAST"), "502 5.5.1")
        expect(c.cmd("STARTTLS"), "502 5.5.1")
        expect(c.cmd("VRFY someone"), "252 2.5.2")
        expect(c.cmd("RSET"), "250 2.0.0")
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA x"), "501 5.5.4")
        expect(c.cmd("QUIT"), "221 2.0.0")
    volley.assert_intact(snap)


def test_ehlo_resets_transaction(volley):
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        c.ehlo("again.test")
        expect(c.cmd("DATA"), "503 5.5.1")
        msgid = queued_id(c.send_message("s2@example.org", ["r2@example.com"], make_body("x")))
    s = volley.show(msgid)
    assert s["helo"] == "again.test" and s["sender"] == "s2@example.org"
    assert [r["address"] for r in s["recipients"]] == ["r2@example.com"]


@pytest.mark.conf({"inject.max_errors": 3})
def test_max_errors_closes(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.cmd("FOO"), "500 5.5.2")
        expect(c.cmd("NOOP"), "250 2.0.0")   # good commands do not reset the count
        expect(c.rcpt("r@example.com"), "503 5.5.1")
        expect(c.cmd("BAR"), "500 5.5.2")
        expect(c.read_reply(), "421 4.7.0")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b"", rest
    # the next connection starts from zero
    with volley.session() as c:
        expect(c.cmd("FOO"), "500 5.5.2")
        expect(c.cmd("FOO"), "500 5.5.2")
        expect(c.cmd("NOOP"), "250 2.0.0")
    volley.assert_intact(snap)


@pytest.mark.conf({"inject.max_errors": 3})
def test_max_errors_with_pipelined_junk(volley):
    """A pipelined burst of junk: 3 replies (the last error then 421), then close; the
    daemon stops reading after the 421."""
    snap = volley.seed()
    with volley.session() as c:
        c.send(b"A\r\nB\r\nC\r\nD\r\nE\r\nNOOP\r\n")
        expect(c.read_reply(), "500 5.5.2")
        expect(c.read_reply(), "500 5.5.2")
        expect(c.read_reply(), "500 5.5.2")
        expect(c.read_reply(), "421 4.7.0")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b"", rest
    volley.assert_intact(snap)


# ---------------------------------------------------------------- pregreet

@pytest.mark.conf({"inject.pregreet_ms": 500})
def test_pregreet_talker_refused(volley):
    snap = volley.seed()
    with volley.connect() as c:
        c.send(b"EHLO impatient.test\r\n")
        r = c.read_reply()
        expect(r, "554 5.5.1")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b"", rest
    recs = [r for r in volley.log_records() if r.get("event") == "inject_reject"
            and r.get("stage") == "pregreet"]
    assert recs
    volley.assert_intact(snap)


@pytest.mark.conf({"inject.pregreet_ms": 500})
def test_pregreet_polite_client(volley):
    t0 = time.monotonic()
    with volley.connect() as c:
        c.greeting()
        waited = time.monotonic() - t0
        assert 0.4 <= waited < 3, "greeting after %.2f s" % waited
        c.ehlo()
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], make_body("pg")))
    assert volley.cat(msgid) == make_body("pg")


@pytest.mark.conf({"inject.pregreet_ms": 500})
def test_pregreet_unix_socket_too(volley):
    snap = volley.seed()
    with volley.connect(unix=True) as c:
        c.send(b"EHLO impatient.test\r\n")
        expect(c.read_reply(), "554 5.5.1")
        closed, _ = c.wait_closed(3)
        assert closed
    # a talker in the middle of a pipelined transaction stores nothing either
    with volley.connect() as c:
        c.send(b"EHLO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<r@example.com>\r\n"
               b"DATA\r\nSubject: early\r\n\r\nx\r\n.\r\n")
        expect(c.read_reply(), "554 5.5.1")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b"", rest
    volley.assert_intact(snap)


# ---------------------------------------------------------------- timeouts

@pytest.mark.conf({"inject.timeout_command": 1})
def test_idle_timeout(volley):
    snap = volley.seed()
    with volley.session() as c:
        t0 = time.monotonic()
        c.settimeout(6)
        r = c.read_reply()
        elapsed = time.monotonic() - t0
        expect(r, "421 4.4.2")
        assert 0.8 <= elapsed < 4, "timeout after %.2f s" % elapsed
        closed, rest = c.wait_closed(3)
        assert closed and rest == b""
    # an idle client in the middle of a transaction: the transaction is dropped
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        c.settimeout(6)
        expect(c.read_reply(), "421 4.4.2")
    volley.assert_intact(snap)


@pytest.mark.conf({"inject.timeout_command": 1})
def test_active_client_not_timed_out(volley):
    """The command timeout is per command, not per session."""
    with volley.session() as c:
        for _ in range(6):
            time.sleep(0.4)
            expect(c.cmd("NOOP"), "250 2.0.0")


@pytest.mark.conf({"inject.timeout_data": 2, "inject.timeout_command": 30})
def test_data_drip_timeout(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        t0 = time.monotonic()
        c.settimeout(0.5)
        reply = None
        text = b"Subject: drip\r\n\r\n" + b"d" * 100
        for i in range(20):            # at most 10 s
            try:
                c.send(text[i:i + 1])
            except OSError:
                break
            try:
                reply = c.read_reply()
                break
            except Exception:
                continue
        elapsed = time.monotonic() - t0
        assert reply is not None, "no reply while dripping for %.1f s" % elapsed
        expect(reply, "421 4.4.2")
        assert 1.5 <= elapsed < 5, "DATA timeout after %.2f s" % elapsed
        closed, _ = c.wait_closed(3)
        assert closed
    volley.assert_intact(snap)


@pytest.mark.conf({"inject.timeout_data": 3, "inject.timeout_command": 30})
def test_data_within_timeout_accepted(volley):
    """A DATA phase that finishes inside timeout_data is fine, even when slow."""
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        body = make_body("slow")
        for chunk in (body[:10], body[10:30], body[30:]):
            c.send(chunk)
            time.sleep(0.3)
        c.send(b".\r\n")
        msgid = queued_id(c.read_reply())
        # and the DATA timer is off once the message is in: stay idle past it
        time.sleep(3.5)
        expect(c.cmd("NOOP"), "250 2.0.0")
    assert volley.cat(msgid) == body
