"""Size, recipient and line limits: exact replies, the session survives, the spool
is untouched by what was refused."""

import pytest

from volley_harness import dot_stuff, expect, make_body, queued_id


def _body_of_size(n, tag="x"):
    """A message of exactly n octets (CRLF lines of at most 78 octets of text)."""
    head = ("Subject: size %s\r\n\r\n" % tag).encode()
    assert n >= len(head) + 2
    rest = n - len(head)
    lines = []
    while rest > 0:
        take = min(80, rest)
        if rest - take == 1:  # never leave a single octet: it cannot be a CRLF line
            take -= 1
        lines.append(b"y" * (take - 2) + b"\r\n")
        rest -= take
    body = head + b"".join(lines)
    assert len(body) == n
    return body


# ---------------------------------------------------------------- message size

@pytest.mark.conf({"inject.max_message_size": 2048})
def test_size_parameter_over_max(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org", "SIZE=2049"), "552 5.3.4")
        expect(c.mail("s@example.org", "SIZE=99999999999999999999999"), "501 5.5.4")
        expect(c.mail("s@example.org", "SIZE=2048"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        body = _body_of_size(2048)
        c.send(dot_stuff(body) + b".\r\n")
        msgid = queued_id(c.read_reply())
    now = volley.assert_intact(snap, allow_new=True)
    assert now[msgid][0] == body


@pytest.mark.conf({"inject.max_message_size": 2048})
def test_actual_size_over_max(volley):
    snap = volley.seed()
    new = {}
    with volley.session() as c:
        # exactly the maximum is accepted
        body = _body_of_size(2048, "max")
        new[queued_id(c.send_message("s@example.org", ["r@example.com"], body))] = body
        # one octet more is refused after the final dot, and nothing is stored
        expect(c.send_message("s@example.org", ["r@example.com"], _body_of_size(2049)),
               "552 5.3.4")
        # far more than the read buffer (256 KiB): the text is read and dropped
        big = _body_of_size(600 * 1024, "big")
        expect(c.send_message("s@example.org", ["r@example.com"], big), "552 5.3.4")
        # the session is still fine for the next message
        body = _body_of_size(1500, "after")
        new[queued_id(c.send_message("s@example.org", ["r2@example.com"], body))] = body
        expect(c.cmd("QUIT"), "221 2.0.0")
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == set(new)
    for msgid, body in new.items():
        assert now[msgid][0] == body
    st = volley.ctl({"cmd": "status"})
    assert st["inject"]["rejected"] == 2


@pytest.mark.conf({"inject.max_message_size": 2048})
def test_size_counts_stored_octets_not_dots(volley):
    """Transparency dots are not part of the message: a 2048-octet message whose wire
    form is longer (many lines starting with '.') is accepted."""
    head = b"Subject: dots\r\n\r\n"
    body = head + b".\r\n" * ((2048 - len(head)) // 3)
    assert len(body) == 2048 and len(dot_stuff(body)) > 2600
    msgid = volley.inject("s@example.org", ["r@example.com"], body)
    assert volley.cat(msgid) == body


# ---------------------------------------------------------------- recipients

@pytest.mark.conf({"inject.max_recipients": 3})
def test_too_many_recipients(volley):
    snap = volley.seed()
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        for i in range(3):
            expect(c.rcpt("r%d@example.com" % i), "250 2.1.5")
        expect(c.rcpt("r3@example.com"), "452 4.5.3")
        expect(c.rcpt("r4@example.com"), "452 4.5.3")
        expect(c.cmd("DATA"), "354")
        body = make_body("three")
        c.send(body + b".\r\n")
        msgid = queued_id(c.read_reply())
        # the limit is per message: the next one may have 3 again
        msgid2 = queued_id(c.send_message("s@example.org",
                                          ["a@x.example", "b@x.example", "c@x.example"], body))
    now = volley.assert_intact(snap, allow_new=True)
    assert now[msgid][3] == ["r0@example.com", "r1@example.com", "r2@example.com"]
    assert len(now[msgid2][3]) == 3
    # 452 is not a protocol error: many of them do not end the session
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        for i in range(3):
            expect(c.rcpt("r%d@example.com" % i), "250 2.1.5")
        for i in range(30):
            expect(c.rcpt("over%d@example.com" % i), "452 4.5.3")
        expect(c.cmd("RSET"), "250 2.0.0")


# ---------------------------------------------------------------- line limits

def test_command_line_too_long(volley):
    snap = volley.seed()
    with volley.session() as c:
        # 2048 octets with CRLF is the longest command line
        line = b"NOOP " + b"a" * (2048 - 5 - 2)
        assert len(line) + 2 == 2048
        expect(c.cmd(line), "250 2.0.0")
        expect(c.cmd(line + b"a"), "500 5.5.2")
        expect(c.cmd(b"NOOP " + b"b" * 5000), "500 5.5.2")
        expect(c.cmd("NOOP"), "250 2.0.0")
        # an over-long MAIL does not start a transaction
        expect(c.cmd(b"MAIL FROM:<" + b"c" * 3000 + b"@example.org>"), "500 5.5.2")
        expect(c.rcpt("r@example.com"), "503 5.5.1")
    volley.assert_intact(snap)


def test_huge_command_line_one_reply(volley):
    """A 100 KB line (arriving in many reads) is ONE over-long line: exactly one 500
    reply, then the next command is answered normally.  (More replies would shift
    every later reply of a pipelining client.)"""
    snap = volley.seed()
    with volley.session() as c:
        c.send(b"NOOP " + b"x" * 100000 + b"\r\n")
        expect(c.read_reply(), "500 5.5.2")
        c.send(b"HELP\r\n")
        expect(c.read_reply(), "214 2.0.0")
        # and the session was not closed for too many errors
        expect(c.cmd("NOOP"), "250 2.0.0")
    volley.assert_intact(snap)


def test_text_line_length(volley):
    snap = volley.seed()
    with volley.session() as c:
        ok = make_body("998", body_lines=["a" * 998, ".b" + "b" * 995])
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], ok))
        bad = make_body("999", body_lines=["short", "a" * 999, "short"])
        expect(c.send_message("s@example.org", ["r@example.com"], bad), "550 5.6.0")
        # a long line in the header section is refused just the same
        bad = ("Subject: " + "h" * 995 + "\r\n\r\nbody\r\n").encode()
        assert len(bad.split(b"\r\n")[0]) == 1004
        expect(c.send_message("s@example.org", ["r@example.com"], bad), "550 5.6.0")
        # a 300 KB line (more than the read buffer) is refused at the end of DATA
        bad = make_body("huge", body_lines=["z" * 300000])
        expect(c.send_message("s@example.org", ["r@example.com"], bad), "550 5.6.0")
        # and the session goes on
        ok2 = make_body("after")
        msgid2 = queued_id(c.send_message("s@example.org", ["r@example.com"], ok2))
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {msgid, msgid2}
    assert now[msgid][0] == ok and now[msgid2][0] == ok2


def test_dot_stuffed_line_length(volley):
    """RFC 5321 4.5.3.1.6: a text line is at most 1000 octets with its CRLF "not counting
    the leading dot duplicated for transparency".  So a 998-octet line that starts with
    a dot (999 on the wire) must be accepted, and a 999-octet one refused."""
    with volley.session() as c:
        ok = make_body("dots", body_lines=["." + "d" * 997])
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], ok))
        bad = make_body("dots", body_lines=["." + "d" * 998])
        expect(c.send_message("s@example.org", ["r@example.com"], bad), "550 5.6.0")
    assert volley.cat(msgid) == ok
