"""X-Volley-Campaign: taken off the stored message and kept as the campaign."""

import pytest

from volley_harness import expect, queued_id

HDRS = ["From: sender@example.org", "To: rcpt@example.com", "Subject: camp"]


def _msg(header_lines, body_lines=("Body.",)):
    return ("\r\n".join(list(header_lines) + [""] + list(body_lines)) + "\r\n").encode()


def _send(v, body, rcpts=("r1@camp.example",)):
    with v.session() as c:
        r = c.send_message("s@example.org", list(rcpts), body)
        expect(c.cmd("NOOP"), "250 2.0.0")  # the session goes on after a refusal
    return r


def test_campaign_header_taken_off(volley):
    body = _msg(HDRS[:2] + ["X-Volley-Campaign: spring-2024.a_b:c+d@e"] + HDRS[2:])
    msgid = queued_id(_send(volley, body, ["a@one.example", "b@two.example"]))
    stored = _msg(HDRS)
    assert volley.cat(msgid) == stored
    s = volley.show(msgid)
    assert s["campaign"] == "spring-2024.a_b:c+d@e"
    assert "X-Volley-Campaign" not in s["headers"]
    assert s["size"] == len(stored)
    assert volley.list()[msgid]["campaign"] == "spring-2024.a_b:c+d@e"
    assert set(volley.list(campaign="spring-2024.a_b:c+d@e")) == {msgid}
    q = volley.queue()
    assert q["by_campaign"]["spring-2024.a_b:c+d@e"] == {"queued": 2, "deferred": 0, "held": 0}
    q = volley.queue(campaign="spring-2024.a_b:c+d@e")
    assert q["total"] == {"messages": 1, "recipients": 2}
    volley.assert_consistent()


@pytest.mark.parametrize("header", [
    "x-volley-campaign: lower-case-name",
    "X-VOLLEY-CAMPAIGN:lower-case-name",
    "X-Volley-Campaign :lower-case-name",        # obsolete "name WSP :" form
    "X-Volley-Campaign:   lower-case-name   ",
])
def test_campaign_header_spellings(volley, header):
    body = _msg([header] + HDRS)
    msgid = queued_id(_send(volley, body))
    assert volley.cat(msgid) == _msg(HDRS)
    assert volley.show(msgid)["campaign"] == "lower-case-name"


def test_campaign_folded_header(volley):
    # the value on a continuation line; the whole field (both lines) goes
    body = _msg(HDRS[:1] + ["X-Volley-Campaign:", " folded-1"] + HDRS[1:])
    msgid = queued_id(_send(volley, body))
    assert volley.cat(msgid) == _msg(HDRS)
    assert volley.show(msgid)["campaign"] == "folded-1"
    # folded with a tab, value split before the fold: "a" CRLF TAB ... is "a<TAB>b",
    # which is not a valid campaign
    bad = _msg(["X-Volley-Campaign: a", "\tb"] + HDRS)
    expect(_send(volley, bad), "550 5.6.0")
    volley.assert_consistent()


def test_campaign_max_length(volley):
    ok = "c" * 128
    msgid = queued_id(_send(volley, _msg(["X-Volley-Campaign: " + ok] + HDRS)))
    assert volley.show(msgid)["campaign"] == ok
    snap = volley.snapshot()
    expect(_send(volley, _msg(["X-Volley-Campaign: " + "c" * 129] + HDRS)), "550 5.6.0")
    expect(_send(volley, _msg(["X-Volley-Campaign: " + "c" * 900] + HDRS)), "550 5.6.0")
    volley.assert_intact(snap)


@pytest.mark.parametrize("value", ["has space", "semi;colon", "", "caf\u00e9", "a/b", "x\"y"])
def test_campaign_invalid_value(volley, value):
    snap = volley.seed()
    body = _msg(HDRS + ["X-Volley-Campaign: " + value])
    expect(_send(volley, body), "550 5.6.0")
    volley.assert_intact(snap)
    recs = [r for r in volley.log_records() if r.get("event") == "inject_reject"]
    assert recs and recs[-1]["reply"].startswith("550 5.6.0")


def test_campaign_twice(volley):
    snap = volley.seed()
    body = _msg(["X-Volley-Campaign: one"] + HDRS + ["X-Volley-Campaign: one"])
    expect(_send(volley, body), "550 5.6.0")
    body = _msg(["X-Volley-Campaign: one", "X-Volley-Campaign: two"] + HDRS)
    expect(_send(volley, body), "550 5.6.0")
    volley.assert_intact(snap)


def test_campaign_in_body_is_not_a_header(volley):
    body = _msg(HDRS, ["X-Volley-Campaign: not-a-header", "text"])
    msgid = queued_id(_send(volley, body))
    assert volley.cat(msgid) == body
    assert volley.show(msgid)["campaign"] == ""
    # counted under "" in queue
    assert volley.queue()["by_campaign"][""]["queued"] == 1


def test_campaign_and_no_campaign_per_transaction(volley):
    """The campaign belongs to one message: the next message of the same session
    without the header has none."""
    with volley.session() as c:
        a = queued_id(c.send_message("s@example.org", ["r@x.example"],
                                     _msg(["X-Volley-Campaign: first"] + HDRS)))
        b = queued_id(c.send_message("s@example.org", ["r@x.example"], _msg(HDRS)))
    assert volley.show(a)["campaign"] == "first"
    assert volley.show(b)["campaign"] == ""
    assert volley.cat(b) == _msg(HDRS)
