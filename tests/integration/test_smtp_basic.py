"""Injection basics: EHLO, a message over TCP and over the unix socket, many
messages per session, and RFC 2920 pipelining."""

import random

from volley_harness import (HOSTNAME, SMTPConn, dot_stuff, expect, expect_code, make_body,
                            queued_id)


def test_greeting_and_ehlo_keywords(volley):
    with volley.connect() as c:
        g = c.greeting()
        assert g.lines == ["220 %s ESMTP Volley" % HOSTNAME]
        r = c.ehlo("client.test")
        assert r.lines[0] == "250-" + HOSTNAME
        keywords = [line[4:] for line in r.lines[1:]]
        for kw in ("PIPELINING", "SIZE 10485760", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"):
            assert kw in keywords, "EHLO lacks %s: %s" % (kw, r)
        expect(c.cmd("NOOP"), "250 2.0.0")
        expect(c.cmd("QUIT"), "221 2.0.0")
        closed, _ = c.wait_closed(3)
        assert closed


def test_ehlo_size_follows_config(volley_factory):
    v = volley_factory({"inject.max_message_size": 4096})
    with v.connect() as c:
        c.greeting()
        assert "250-SIZE 4096" in c.ehlo().lines


def _dotty_body(tag):
    # lines that need transparency, one that is a lone dot after un-stuffing, 8-bit text,
    # an empty line inside the body, and a long (but legal) line
    return make_body("basic " + tag, extra_headers=["Message-Id: <%s@test>" % tag],
                     body_lines=[".starts with a dot", ".", "..two dots", "", "caf\u00e9",
                                 "y" * 998, ". dot space", "end"])


def _check_stored(v, msgid, body, sender, rcpts_stored, client):
    assert v.cat(msgid) == body
    s = v.show(msgid)
    assert s["id"] == msgid
    assert s["sender"] == sender
    assert s["campaign"] == ""
    assert s["client"] == client
    assert s["helo"] == "client.test"
    assert s["size"] == len(body)
    assert [r["address"] for r in s["recipients"]] == rcpts_stored
    assert [r["domain"] for r in s["recipients"]] == [a.rsplit("@", 1)[1] for a in rcpts_stored]
    assert all(r["state"] == "queued" and r["attempts"] == 0 for r in s["recipients"])
    assert s["headers"] == body[:body.index(b"\r\n\r\n") + 2].decode()
    listed = v.list()[msgid]
    assert listed["size"] == len(body)
    assert listed["recipients"] == len(rcpts_stored)
    assert listed["sender"] == sender


def test_message_over_tcp_and_unix(volley):
    sent = {}
    for unix in (False, True):
        tag = "unix" if unix else "tcp"
        body = _dotty_body(tag)
        rcpts = ["One@Example.COM", "two@example.com", "Three.Person@MiXeD.Example.NET"]
        with volley.session(unix=unix) as c:
            expect(c.mail("Sender@Example.ORG", "BODY=8BITMIME"), "250 2.1.0")
            for r in rcpts:
                expect(c.rcpt(r), "250 2.1.5")
            expect(c.cmd("DATA"), "354")
            wire = dot_stuff(body) + b".\r\n"
            assert b"\r\n..\r\n" in wire and b"\r\n...two dots" in wire
            c.send(wire)
            msgid = queued_id(c.read_reply())
            expect(c.cmd("QUIT"), "221 2.0.0")
        sent[msgid] = (body, unix)
        # the domain is lowercased, the local part kept as sent
        stored = ["One@example.com", "two@example.com", "Three.Person@mixed.example.net"]
        _check_stored(volley, msgid, body, "Sender@Example.ORG", stored,
                      "unix" if unix else "127.0.0.1")
    assert len(set(sent)) == 2
    assert set(volley.list()) == set(sent)
    st = volley.ctl({"cmd": "status"})
    assert st["ok"] and st["queue"]["messages"] == 2 and st["queue"]["recipients"] == 6
    assert st["inject"]["accepted_msgs"] == 2 and st["inject"]["accepted_rcpts"] == 6
    assert st["pid"] == volley.pid
    volley.assert_consistent()


def test_mail_flags_stored(volley):
    """BODY=8BITMIME and SMTPUTF8 given at MAIL are kept with the message (show flags);
    without them, no flags."""
    plain = volley.inject("a@example.org", ["r@example.com"], make_body("plain"))
    eight = volley.inject("a@example.org", ["r@example.com"], make_body("caf\u00e9"),
                          params="BODY=8BITMIME")
    utf8 = volley.inject("a@example.org", ["r@example.com"], make_body("utf8"),
                         params="SMTPUTF8")
    both = volley.inject("a@example.org", ["r@example.com"], make_body("both"),
                         params="BODY=8BITMIME SMTPUTF8")
    assert volley.show(plain)["flags"] == []
    assert volley.show(eight)["flags"] == ["8bitmime"]
    assert volley.show(utf8)["flags"] == ["smtputf8"]
    assert volley.show(both)["flags"] == ["8bitmime", "smtputf8"]


def test_pid_file_written(volley):
    with open(volley.settings["daemon.pid_file"]) as f:
        assert int(f.read().strip()) == volley.pid


def test_many_messages_one_session(volley):
    rng = random.Random(1)
    sent = {}
    with volley.session() as c:
        for i in range(60):
            n = rng.randint(1, 3)
            rcpts = ["r%d.%d@d%d.example" % (i, k, k) for k in range(n)]
            lines = ["line %d %s" % (i, "z" * rng.randint(0, 300)) for _ in range(rng.randint(1, 20))]
            body = make_body("many %d" % i, body_lines=lines)
            if i % 7 == 0:
                expect(c.cmd("RSET"), "250 2.0.0")
            if i % 11 == 0:
                expect(c.cmd("NOOP"), "250 2.0.0")
            if i % 13 == 0:  # a transaction abandoned half-way must leave nothing behind
                expect(c.mail("abandoned@example.org"), "250 2.1.0")
                expect(c.rcpt("nobody@abandoned.example"), "250 2.1.5")
                expect(c.cmd("RSET"), "250 2.0.0")
            msgid = queued_id(c.send_message("s%d@example.org" % i, rcpts, body))
            assert msgid not in sent
            sent[msgid] = (body, rcpts)
        expect(c.cmd("QUIT"), "221 2.0.0")
    ids = list(sent)
    assert ids == sorted(ids), "ids from one session should increase"
    assert set(volley.list()) == set(sent)
    for msgid, (body, rcpts) in sent.items():
        assert volley.cat(msgid) == body
        assert [r["address"] for r in volley.show(msgid)["recipients"]] == rcpts
    volley.assert_consistent()


def test_pipelined_command_group_replies_in_order(volley):
    snap = volley.seed()
    with volley.connect() as c:
        c.greeting()
        # EHLO may be pipelined too (RFC 2920 3.1 allows it as the last of a group)
        c.send(b"EHLO client.test\r\n")
        expect_code(c.read_reply(), 250)
        # one write: MAIL, a bad RCPT, two good RCPTs, DATA
        c.send(b"MAIL FROM:<p@example.org>\r\n"
               b"RCPT TO:<bad address>\r\n"
               b"RCPT TO:<r1@example.com>\r\n"
               b"RCPT TO:<r2@example.net>\r\n"
               b"DATA\r\n")
        expect(c.read_reply(), "250 2.1.0")
        expect(c.read_reply(), "501 5.1.3")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "354")
        body1 = make_body("pipelined one")
        body2 = make_body("pipelined two", body_lines=[".dot", "two"])
        body3 = make_body("pipelined three")
        # message text, end of data, and the next transaction's commands in one write
        c.send(dot_stuff(body1) + b".\r\n"
               b"MAIL FROM:<p2@example.org>\r\n"
               b"RCPT TO:<r3@example.org>\r\n"
               b"DATA\r\n")
        id1 = queued_id(c.read_reply())
        expect(c.read_reply(), "250 2.1.0")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "354")
        c.send(dot_stuff(body2) + b".\r\n"
               b"RSET\r\n"
               b"MAIL FROM:<p3@example.org>\r\n"
               b"RCPT TO:<r4@example.org>\r\n"
               b"RCPT TO:<r5@example.org>\r\n"
               b"DATA\r\n")
        id2 = queued_id(c.read_reply())
        expect(c.read_reply(), "250 2.0.0")
        expect(c.read_reply(), "250 2.1.0")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "354")
        c.send(dot_stuff(body3) + b".\r\nNOOP\r\nQUIT\r\n")
        id3 = queued_id(c.read_reply())
        expect(c.read_reply(), "250 2.0.0")
        expect(c.read_reply(), "221 2.0.0")
        closed, rest = c.wait_closed(3)
        assert closed and rest == b""
    assert len({id1, id2, id3}) == 3
    now = volley.assert_intact(snap, allow_new=True)
    assert set(now) - set(snap) == {id1, id2, id3}
    assert now[id1][0] == body1 and now[id1][3] == ["r1@example.com", "r2@example.net"]
    assert now[id2][0] == body2 and now[id2][3] == ["r3@example.org"]
    assert now[id3][0] == body3 and now[id3][3] == ["r4@example.org", "r5@example.org"]


def test_client_that_pipelines_without_reading(volley):
    """A client that writes 50000 NOOPs before reading a single reply must get exactly
    50000 replies, in order, and the session must still work afterwards (the daemon
    pauses reading while its replies are not taken, instead of buffering without
    bound or dropping any)."""
    import threading
    n = 50000
    with volley.session() as c:
        c.settimeout(30)
        errors = []

        def writer():
            try:
                c.send(b"NOOP\r\n" * n)
            except OSError as e:
                errors.append(e)

        t = threading.Thread(target=writer, daemon=True)
        t.start()
        t.join(1.0)  # let the daemon's output back up before reading
        for i in range(n):
            r = c.read_reply()
            assert r.lines == ["250 2.0.0 Ok"], "reply %d: %s" % (i, r)
        t.join(10)
        assert not t.is_alive() and not errors, errors
        body = make_body("after noops")
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], body))
    assert volley.cat(msgid) == body
    volley.assert_consistent()


def test_pipelining_stress_one_write_per_message(volley):
    """Each message is written as [body + "." + next MAIL/RCPT/DATA] in one write; the
    250 for the message must always precede the next MAIL's reply."""
    bodies = {}
    with volley.session() as c:
        c.send(b"MAIL FROM:<s@example.org>\r\nRCPT TO:<x0@example.com>\r\nDATA\r\n")
        expect(c.read_reply(), "250 2.1.0")
        expect(c.read_reply(), "250 2.1.5")
        expect(c.read_reply(), "354")
        for i in range(40):
            body = make_body("stress %d" % i, body_lines=["." * (i % 5), "n=%d" % i])
            last = i == 39
            nxt = b"QUIT\r\n" if last else (
                b"MAIL FROM:<s@example.org>\r\nRCPT TO:<x%d@example.com>\r\nDATA\r\n" % (i + 1))
            c.send(dot_stuff(body) + b".\r\n" + nxt)
            msgid = queued_id(c.read_reply())
            bodies[msgid] = body
            if last:
                expect(c.read_reply(), "221 2.0.0")
            else:
                expect(c.read_reply(), "250 2.1.0")
                expect(c.read_reply(), "250 2.1.5")
                expect(c.read_reply(), "354")
    assert len(bodies) == 40
    for msgid, body in bodies.items():
        assert volley.cat(msgid) == body
    volley.assert_consistent()


def test_empty_message(volley):
    with volley.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(b".\r\n")
        msgid = queued_id(c.read_reply())
    assert volley.cat(msgid) == b""
    s = volley.show(msgid)
    assert s["size"] == 0 and s["headers"] == ""
    volley.assert_consistent()


def test_every_octet_byte_exact(volley):
    """All 254 octets other than CR and LF (NUL and high bytes included) survive
    injection, storage and cat unchanged; show still answers (with a replaced header
    text) when the header section is not UTF-8."""
    octets = bytes(b for b in range(256) if b not in (10, 13))
    body = (b"Subject: \xff\xfe binary \x00 header\r\nX-Raw: " + octets + b"\r\n\r\n" +
            octets + b"\r\n" + octets[::-1] + b"\r\n.\x00\r\n")
    with volley.session() as c:
        msgid = queued_id(c.send_message("s@example.org", ["r@example.com"], body,
                                         "BODY=8BITMIME"))
    assert volley.cat(msgid) == body
    s = volley.show(msgid)
    assert s["size"] == len(body)
    assert s["headers"].startswith("Subject: ")
    volley.assert_consistent()


def test_client_vanishing_around_commit(volley):
    """Clients that send the final dot and disconnect at once: each message is stored
    whole or not at all, the daemon keeps serving, the spool stays consistent."""
    bodies = {}
    for i in range(40):
        body = make_body("vanish %d" % i, body_lines=["v" * (i * 50)])
        bodies[body] = i
        c = volley.session()
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r%d@example.com" % i), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        c.send(dot_stuff(body) + b".\r\nQUIT\r\n")
        c.close()
    msgid = volley.inject("s@example.org", ["r@example.com"], make_body("after"))
    listed = volley.list()
    assert msgid in listed
    for other in set(listed) - {msgid}:
        assert volley.cat(other) in bodies
    volley.assert_consistent()
