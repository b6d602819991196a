"""Message preparation at injection, with the shipped defaults: a message needs
exactly one From header; Message-ID and Date are added when missing (once, at the
top of the header section, so every try sends the same bytes); everything else is
stored byte-exact."""

import email.utils
import re

import pytest

from volley_harness import dot_stuff, expect, queued_id

PREP = {"inject.require_from": True, "inject.add_message_id": True, "inject.add_date": True}


def _send(v, body):
    with v.session() as c:
        expect(c.mail("s@example.org"), "250 2.1.0")
        expect(c.rcpt("r@example.com"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        return c.data_raw(dot_stuff(body) + b".\r\n")


@pytest.mark.conf(PREP)
def test_from_is_required_exactly_once(volley):
    r = _send(volley, b"To: r@example.com\r\nSubject: no from\r\n\r\nbody\r\n")
    expect(r, "550 5.6.0", "no From header")
    r = _send(volley, b"From: a@example.org\r\nFrom: b@example.org\r\nSubject: two\r\n\r\nx\r\n")
    expect(r, "550 5.6.0", "2 From headers")
    assert volley.list() == {}
    rej = [x for x in volley.log_records() if x.get("event") == "inject_reject"]
    assert len(rej) == 2 and all(x["stage"] == "data" for x in rej), rej


@pytest.mark.conf(PREP)
def test_message_id_and_date_added_when_missing(volley):
    body = b"From: a@example.org\r\nSubject: bare\r\n\r\nline one\r\n.dot line\r\n"
    msgid = queued_id(_send(volley, body))
    stored = volley.cat(msgid)
    head, rest = stored.split(b"From: a@example.org", 1)
    assert b"From: a@example.org" + rest == body  # the message itself untouched
    fields = dict(line.split(": ", 1) for line in head.decode().strip("\r\n").split("\r\n"))
    assert set(fields) == {"Message-ID", "Date"}, fields
    assert re.fullmatch(r"<%s\.volley@[^>]+>" % msgid, fields["Message-ID"]), fields
    assert email.utils.parsedate_to_datetime(fields["Date"]) is not None


@pytest.mark.conf(PREP)
def test_existing_message_id_and_date_are_kept(volley):
    body = (b"Date: Mon, 30 Nov 2026 10:00:00 +0100\r\nMessage-ID: <own@example.org>\r\n"
            b"From: a@example.org\r\nSubject: complete\r\n\r\nx\r\n")
    msgid = queued_id(_send(volley, body))
    assert volley.cat(msgid) == body
