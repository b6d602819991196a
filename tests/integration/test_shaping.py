"""Traffic shaping against receiving hosts that police their clients.

Every limit is checked on the receiving side (PolicingHost records when each
connection opened and closed, its peer address and EHLO name, and when each message
was accepted): connections at once, messages per connection, messages per second,
the source address a pool chose.  Throttling replies (Gmail's 421 4.7.28, Yahoo's
TSS04 and TSS09, a connection cap) must make volleyd suspend or slow down the
(source, site) pair by itself, log it, recover, and still deliver every message
exactly once.
"""

import json
import signal
import subprocess
import time
from datetime import datetime, timezone

import pytest

from mailnet import acct_records, wait_final, wait_until
from volley_harness import VOLLEYD, dot_stuff, expect, make_body, render_config

SENDER = "bulk@example.org"


def _rules(mailnet, text, name="shaping.conf"):
    path = mailnet.dir / name
    path.write_text(text)
    return str(path)


def _start(mailnet, volley_factory, rules_text, domains, overrides=None):
    """DNS for {domain: (mx name, ip)}, volleyd with the rules; returns volley."""
    hosts = {mx: ip for mx, ip in domains.values()}
    mailnet.start_dns(hosts=hosts, mx=[(d, mx, 10) for d, (mx, _) in domains.items()])
    settings = {"shaping.rules_file": _rules(mailnet, rules_text),
                "delivery.retry_schedule": "1s", "delivery.idle_timeout": 1}
    settings.update(overrides or {})
    return volley_factory(mailnet.settings(settings))


def _inject(v, rcpts, tag, headers=(), sender=SENDER):
    sent = []
    for i, rcpt in enumerate(rcpts):
        body = make_body("%s %d" % (tag, i), extra_headers=headers)
        sent.append((v.inject(sender, [rcpt], body), rcpt, body))
    return sent


def _assert_all_once(host, sent):
    got = {}
    for a in host.accepted:
        for r in a.rcpts:
            got.setdefault(r, []).append(a)
    for _, rcpt, body in sent:
        assert len(got.get(rcpt, [])) == 1, (rcpt, got.get(rcpt))
        assert got[rcpt][0].content == body, rcpt


def _shaping_recs(v, kind):
    return [r for r in acct_records(v) if r.get("type") == kind]


def _pairs(v):
    r = v.volleyctl("sites", "--json")
    assert r.returncode == 0, r
    return {(s["site"], p["source"]): dict(p, site_class=s.get("class"), queued=s["queued"])
            for s in json.loads(r.stdout)["sites"] for p in s.get("pairs", [])}


# --------------------------------------------------------------------------- limits


def test_rate_limit_holds_on_the_receiver_and_spares_other_sites(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        rules = ( { name = "slow"; match = [ "domain:slow.test" ]; message_rate = "4/s"; } );
    ''', {"slow.test": ("mx.slow.test", "127.0.0.2"), "fast.test": ("mx.fast.test", "127.0.0.3")})
    slow = mailnet.policing("127.0.0.2", "mx.slow.test")
    fast = mailnet.policing("127.0.0.3", "mx.fast.test")
    t0 = time.monotonic()
    s_sent = _inject(v, ["u%d@slow.test" % i for i in range(16)], "slow")
    f_sent = _inject(v, ["u%d@fast.test" % i for i in range(40)], "fast")
    wait_final(v, [(m, r) for m, r, _ in f_sent], timeout=15)
    fast_done = time.monotonic()
    wait_final(v, [(m, r) for m, r, _ in s_sent], timeout=30)
    _assert_all_once(slow, s_sent)
    _assert_all_once(fast, f_sent)
    # 4/s with a burst of 1: never more than 1 + 4 in any second, and 16 messages
    # take at least 15 / 4 s
    assert slow.max_in_window(1.0) <= 5, slow.max_in_window(1.0)
    span = max(a.t for a in slow.accepted) - min(a.t for a in slow.accepted)
    assert span >= 3.5, span
    # the unlimited site did not wait for the limited one
    assert fast_done < max(a.t for a in slow.accepted) - 1.0, (fast_done - t0)
    pairs = _pairs(v)
    p = pairs[("mx.slow.test", "default")]
    assert p["site_class"] == "slow" and p["rate"] == pytest.approx(4.0), p
    assert p["sent_last_minute"] == 16, p
    assert pairs[("mx.fast.test", "default")]["site_class"] == "default"


def test_connection_and_per_connection_limits_hold(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        defaults = { max_connections = 2; max_messages_per_connection = 3; };
    ''', {"conn.test": ("mx.conn.test", "127.0.0.2")},
        {"delivery.max_connections_per_site": 10, "delivery.pipeline_next_message": False})
    host = mailnet.policing("127.0.0.2", "mx.conn.test", max_conns=2)
    sent = _inject(v, ["u%d@conn.test" % i for i in range(24)], "conn")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=30)
    _assert_all_once(host, sent)
    assert host.refused == 0, "volleyd opened more than 2 connections at once"
    assert host.max_active <= 2, host.max_active
    assert max(s["msgs"] for s in host.sessions) <= 3, host.sessions
    assert len(host.sessions) >= 8, len(host.sessions)
    # every message was delivered on the first try: no limit was hit on the wire
    assert not _shaping_recs(v, "deferred")


def test_a_provider_rule_names_a_site_first_reached_by_another_domain(mailnet, volley_factory):
    # two domains on one receiving host: the site is one, and the rule that matches
    # the second domain's MX name governs it even though the first domain came first
    v = _start(mailnet, volley_factory, '''
        rules = ( { name = "provider"; match = [ "mx:mx.big.test" ]; max_connections = 3; } );
    ''', {"small.test": ("mx.small.test", "127.0.0.2"), "big.test": ("mx.big.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.shared.test")
    first = _inject(v, ["a@small.test"], "small")
    wait_final(v, [(m, r) for m, r, _ in first], timeout=10)
    assert [p["site_class"] for p in _pairs(v).values()] == ["default"]
    second = _inject(v, ["b@big.test"], "big")
    wait_final(v, [(m, r) for m, r, _ in second], timeout=10)
    pairs = _pairs(v)
    assert len(pairs) == 1 and list(pairs.values())[0]["site_class"] == "provider", pairs
    assert list(pairs.values())[0]["max_connections"] <= 3, pairs
    assert len(host.accepted) == 2


# --------------------------------------------------------------------------- backoff


GMAIL_RULES = '''
    recovery_step = "1s";
    responses = (
        { name = "gmail-unusual-rate"; code = 421; enh = "4.7.28";
          action = "suspend"; duration = "3s"; }
    );
'''


def _per_window(n, window):
    """A mail policy: 421 4.7.28 to the MAIL after n in the last window seconds."""
    def policy(host, sess, now):
        with host.lock:
            recent = sum(1 for t in host.mails if t > now - window)
        if recent > n:
            return ("421 4.7.28 [127.0.0.1] Our system has detected an unusual rate of "
                    "unsolicited mail originating from your IP address.")
        return None
    return policy


def test_gmail_421_4_7_28_suspends_the_pair_then_all_is_delivered(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, GMAIL_RULES,
               {"g.test": ("mx.g.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.g.test", mail_policy=_per_window(5, 2.0))
    sent = _inject(v, ["u%d@g.test" % i for i in range(12)], "gmail")
    out = wait_final(v, [(m, r) for m, r, _ in sent], timeout=40)
    assert all(recs[-1]["type"] == "delivered" for recs in out.values()), out
    _assert_all_once(host, sent)
    assert host.policy_replies, "the host never throttled"
    susp = _shaping_recs(v, "suspend")
    assert susp, acct_records(v)
    s = susp[0]
    assert s["rule"] == "gmail-unusual-rate" and s["site"] == "mx.g.test", s
    assert s["source"] == "default" and s["code"] == 421 and s["enh"] == "4.7.28", s
    assert "unusual rate" in s["diag"] and s["until"], s
    assert s["max_connections"] == 0, s
    resumes = _shaping_recs(v, "resume")
    assert resumes and resumes[0]["rule"] == "gmail-unusual-rate", resumes
    # while suspended (3 s from each 421) no new session reached the host
    for t, reply in host.policy_replies:
        late = [x for x in host.sessions if t + 0.1 < x["start"] < t + 2.8]
        assert not late, (t, late)
    # the throttled recipient was deferred with the reply, then delivered
    deferred = [r for r in acct_records(v) if r["type"] == "deferred"]
    assert deferred and all(r["code"] == 421 for r in deferred), deferred


def test_yahoo_tss04_lowers_rate_and_connections_then_recovers(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        recovery_step = "1s";
        responses = (
            { name = "yahoo-tss04"; code = 421; text = "\\\\[TSS04\\\\]";
              action = "backoff"; duration = "3s"; message_rate = "2/s"; max_connections = 1; }
        );
    ''', {"y.test": ("mx.y.test", "127.0.0.2")})
    said = []

    def once(host, sess, now):
        if len(host.mails) > 3 and not said:
            said.append(now)
            return ("421 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to "
                    "unexpected volume or user complaints - 4.16.56.1; see "
                    "https://postmaster.yahooinc.com/error-codes")
        return None

    host = mailnet.policing("127.0.0.2", "mx.y.test", mail_policy=once)
    sent = _inject(v, ["u%d@y.test" % i for i in range(24)], "yahoo")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=40)
    _assert_all_once(host, sent)
    assert said
    b = _shaping_recs(v, "backoff")
    assert len(b) == 1, b
    assert b[0]["rule"] == "yahoo-tss04" and "TSS04" in b[0]["diag"], b
    assert b[0]["rate"] == pytest.approx(2.0) and b[0]["max_connections"] == 1, b
    assert _shaping_recs(v, "resume"), acct_records(v)
    # during the backoff (after a round trip for what was already on the wire):
    # one connection at a time, at most 1 + 2 MAIL commands in any second
    t0, t_end = said[0] + 0.3, said[0] + 2.9
    during = [t for t in host.mails if t0 < t < t_end]
    assert during, host.mails
    for t in during:
        assert sum(1 for u in during if t <= u < t + 1.0) <= 3, during
    opened = [x for x in host.sessions if t0 < x["start"] < t_end]
    for x in opened:
        overlap = [y for y in host.sessions if y is not x and y["start"] < (x["end"] or 1e18)
                   and x["start"] < (y["end"] or 1e18)]
        assert not overlap, (x, overlap)


def test_bounce_action_fails_a_deferral_that_will_never_succeed(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        responses = ( { name = "yahoo-tss09"; code = 421; text = "\\\\[TSS09\\\\]";
                        action = "bounce"; } );
    ''', {"y9.test": ("mx.y9.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.y9.test", mail_policy=lambda h, s, now: (
        "421 4.7.0 [TSS09] All messages from 127.0.0.1 will be permanently deferred; "
        "Retrying will NOT succeed."))
    sent = _inject(v, ["gone@y9.test"], "tss09")
    out = wait_final(v, [(m, r) for m, r, _ in sent], timeout=15)
    recs = out[(sent[0][0], "gone@y9.test")]
    assert [r["type"] for r in recs] == ["bounced"], recs
    assert recs[0]["attempt"] == 1 and "TSS09" in recs[0]["diag"], recs
    assert recs[0]["code"] == 550 and recs[0]["enh"] == "5.7.0", recs
    assert "421 4.7.0" in recs[0]["diag"] and "yahoo-tss09" in recs[0]["diag"], recs
    assert not host.accepted
    assert v.list() == {}


def test_connection_cap_replies_close_the_window(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        defaults = { max_connections = 8; };
        responses = ( { name = "too-many-connections"; text = "too many (concurrent )?connections";
                        action = "backoff"; duration = "2s"; max_connections = 1; } );
    ''', {"cap.test": ("mx.cap.test", "127.0.0.2")},
        {"delivery.max_connections_per_site": 8})
    host = mailnet.policing("127.0.0.2", "mx.cap.test", max_conns=2)
    sent = _inject(v, ["u%d@cap.test" % i for i in range(30)], "cap")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=40)
    _assert_all_once(host, sent)
    b = _shaping_recs(v, "backoff")
    assert b and b[0]["rule"] == "too-many-connections" and b[0]["max_connections"] == 1, b
    # the window closed: far fewer refusals than messages
    assert host.refused < 15, host.refused


# --------------------------------------------------------------------------- sources


SOURCE_RULES = '''
    sources = (
        { name = "s1"; address = "127.0.0.50"; ehlo = "s1.volley.test"; },
        { name = "s2"; address = "127.0.0.51"; ehlo = "s2.volley.test"; }
    );
    pools = (
        { name = "default"; sources = [ "s1" ]; },
        { name = "both"; sources = [ "s1", "s2:3" ]; },
        { name = "second"; sources = [ "s2" ]; }
    );
    select = (
        { campaign = "promo-*"; pool = "both"; },
        { sender_domain = "*.news.example"; pool = "second"; }
    );
'''


def test_sources_bind_their_address_and_ehlo_by_pool(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, SOURCE_RULES, {"src.test": ("mx.src.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.src.test")
    plain = _inject(v, ["plain%d@src.test" % i for i in range(3)], "plain")
    header = _inject(v, ["hdr%d@src.test" % i for i in range(3)], "hdr",
                     headers=("X-Volley-Pool: second",))
    promo = _inject(v, ["promo%d@src.test" % i for i in range(40)], "promo",
                    headers=("X-Volley-Campaign: promo-7",))
    news = _inject(v, ["news%d@src.test" % i for i in range(3)], "news",
                   sender="editor@daily.news.example")
    every = plain + header + promo + news
    out = wait_final(v, [(m, r) for m, r, _ in every], timeout=30)
    assert all(recs[-1]["type"] == "delivered" for recs in out.values())
    by_rcpt = {r: a for a in host.accepted for r in a.rcpts}
    for _, rcpt, _ in plain:
        a = by_rcpt[rcpt]
        assert (a.peer, a.helo) == ("127.0.0.50", "s1.volley.test"), a
    for _, rcpt, _ in header + news:
        a = by_rcpt[rcpt]
        assert (a.peer, a.helo) == ("127.0.0.51", "s2.volley.test"), a
        assert b"x-volley-pool" not in a.content.lower()
    peers = [by_rcpt[r].peer for _, r, _ in promo]
    assert set(peers) == {"127.0.0.50", "127.0.0.51"}, peers
    # "s1", "s2:3": the pool's messages take turns by weight (30 of 40 from s2),
    # whichever connections happen to be open
    assert 25 <= peers.count("127.0.0.51") <= 35, peers
    # accounting names the source address, the vmta and the pool
    for (m, r), recs in out.items():
        rec = recs[-1]
        a = by_rcpt[r]
        assert rec["source"] == a.peer, rec
        assert rec["vmta"] == {"127.0.0.50": "s1", "127.0.0.51": "s2"}[a.peer], rec
        want = ("both" if r.startswith("promo") else "second"
                if r.startswith(("hdr", "news")) else "default")
        assert rec["pool"] == want, rec
    pairs = _pairs(v)
    assert {("mx.src.test", "s1"), ("mx.src.test", "s2")} <= set(pairs), pairs


def test_unknown_pool_header_is_refused_at_injection(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, SOURCE_RULES, {"src.test": ("mx.src.test", "127.0.0.2")})
    mailnet.policing("127.0.0.2", "mx.src.test")
    with v.session() as c:
        expect(c.mail(SENDER), "250 2.1.0")
        expect(c.rcpt("x@src.test"), "250 2.1.5")
        expect(c.cmd("DATA"), "354")
        r = c.data_raw(dot_stuff(make_body("bad pool", extra_headers=("X-Volley-Pool: nosuch",)))
                       + b".\r\n")
        expect(r, "550 5.6.0", "nosuch")
    assert v.list() == {}


def _today():
    return datetime.now(timezone.utc).strftime("%Y-%m-%d")


def test_warmup_cap_moves_mail_to_other_sources_and_is_never_exceeded(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        sources = (
            { name = "new"; address = "127.0.0.50"; ehlo = "new.volley.test";
              warmup_start = "%s"; warmup_daily = [ 4, 8 ]; },
            { name = "old"; address = "127.0.0.51"; ehlo = "old.volley.test"; }
        );
        pools = ( { name = "default"; sources = [ "new:5", "old" ]; },
                  { name = "warm"; sources = [ "new" ]; } );
    ''' % _today(), {"w.test": ("mx.w.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.w.test")
    mixed = _inject(v, ["m%d@w.test" % i for i in range(20)], "mixed")
    wait_final(v, [(m, r) for m, r, _ in mixed], timeout=30)
    _assert_all_once(host, mixed)
    from_new = [a for a in host.accepted if a.peer == "127.0.0.50"]
    assert len(from_new) == 4, len(from_new)
    # a pool with only the capped source: the mail waits, it is not sent
    waiting = _inject(v, ["wait%d@w.test" % i for i in range(2)], "wait",
                      headers=("X-Volley-Pool: warm",))
    time.sleep(2.5)
    assert len([a for a in host.accepted if a.peer == "127.0.0.50"]) == 4
    assert not [a for a in host.accepted if a.rcpts[0].startswith("wait")]
    q = v.list()
    assert set(q) == {m for m, _, _ in waiting}, q
    p = _pairs(v)[("mx.w.test", "new")]
    assert p["sent_today"] == 4 and p["warmup_cap"] == 4, p

    # the day's count is in the spool: a restart does not reopen the cap
    v.restart()
    more = _inject(v, ["after%d@w.test" % i for i in range(12)], "after")
    wait_final(v, [(m, r) for m, r, _ in more], timeout=30)
    assert len([a for a in host.accepted if a.peer == "127.0.0.50"]) == 4
    assert not [a for a in host.accepted if a.rcpts[0].startswith("wait")]
    p = _pairs(v)[("mx.w.test", "new")]
    assert p["sent_today"] == 4 and p["warmup_cap"] == 4, p


def test_warmup_cap_counts_every_site_of_a_class_together(mailnet, volley_factory):
    # two receiving hosts, two sites, one rule (one site class): the day's cap is
    # the class's, so the capped source sends 5 in all, not 5 to each
    v = _start(mailnet, volley_factory, '''
        rules = ( { name = "bigprovider"; match = [ "mx:*.bigp.test" ]; } );
        sources = (
            { name = "new"; address = "127.0.0.50"; warmup_start = "%s"; warmup_daily = [ 5 ]; },
            { name = "old"; address = "127.0.0.51"; }
        );
        pools = ( { name = "default"; sources = [ "new:9", "old" ]; } );
    ''' % _today(), {"a.test": ("mx1.bigp.test", "127.0.0.2"),
                       "b.test": ("mx2.bigp.test", "127.0.0.3")}, {"delivery.workers": 2})
    h1 = mailnet.policing("127.0.0.2", "mx1.bigp.test")
    h2 = mailnet.policing("127.0.0.3", "mx2.bigp.test")
    sent = _inject(v, ["a%d@a.test" % i for i in range(12)] +
                   ["b%d@b.test" % i for i in range(12)], "cls")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=30)
    got = h1.accepted + h2.accepted
    assert len(got) == 24
    assert len([a for a in got if a.peer == "127.0.0.50"]) == 5, [a.peer for a in got]
    pairs = _pairs(v)
    assert {pairs[(site, "new")]["site_class"] for site in ("mx1.bigp.test", "mx2.bigp.test")} \
        == {"bigprovider"}
    assert pairs[("mx1.bigp.test", "new")]["sent_today"] == 5, pairs


def test_site_rate_holds_over_all_sources(mailnet, volley_factory):
    # each source may send 50/s, but the site takes 4/s whichever source sends
    v = _start(mailnet, volley_factory, '''
        rules = ( { name = "siterate"; match = [ "domain:sr.test" ];
                    message_rate = "50/s"; message_rate_site = "4/s"; } );
        sources = ( { name = "s1"; address = "127.0.0.50"; },
                    { name = "s2"; address = "127.0.0.51"; } );
        pools = ( { name = "default"; sources = [ "s1", "s2" ]; } );
    ''', {"sr.test": ("mx.sr.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.sr.test")
    sent = _inject(v, ["u%d@sr.test" % i for i in range(20)], "sr")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=30)
    _assert_all_once(host, sent)
    assert {a.peer for a in host.accepted} == {"127.0.0.50", "127.0.0.51"}
    # 4/s with a burst of 1 over both sources: at most 1 + 4 in any second, and 20
    # messages take at least 19 / 4 s
    assert host.max_in_window(1.0) <= 5, host.max_in_window(1.0)
    span = max(a.t for a in host.accepted) - min(a.t for a in host.accepted)
    assert span >= 4.5, span
    r = v.volleyctl("sites", "--json")
    site = [x for x in json.loads(r.stdout)["sites"] if x["site"] == "mx.sr.test"][0]
    assert site["limits"]["message_rate_site"] == pytest.approx(4.0), site


# --------------------------------------------------------------------------- control


def test_manual_suspend_and_resume(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, "", {"man.test": ("mx.man.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.man.test")
    first = _inject(v, ["first@man.test"], "first")
    wait_final(v, [(m, r) for m, r, _ in first], timeout=10)

    r = v.volleyctl("suspend", "mx.man.test", "--for", "60")
    assert r.returncode == 0 and b"suspended 1" in r.stdout, r
    held = _inject(v, ["held%d@man.test" % i for i in range(3)], "held")
    time.sleep(2.0)
    assert len(host.accepted) == 1
    p = _pairs(v)[("mx.man.test", "default")]
    assert p["state"] == "suspended" and p["until"] and p["max_connections"] == 0, p
    text = v.volleyctl("sites").stdout.decode()
    assert "suspended" in text, text

    r = v.volleyctl("resume", "mx.man.test")
    assert r.returncode == 0 and b"resumed 1" in r.stdout, r
    wait_final(v, [(m, r) for m, r, _ in held], timeout=10)
    assert len(host.accepted) == 4
    s, res = _shaping_recs(v, "suspend"), _shaping_recs(v, "resume")
    assert len(s) == 1 and s[0]["rule"] == "manual", s
    assert len(res) == 1 and res[0]["site"] == "mx.man.test", res

    for args, err in ((("suspend", "no.such.site"), b"no such"),
                      (("suspend", "mx.man.test", "--source", "nope"), b"no such"),
                      (("suspend", "mx.man.test", "--for", "0"), b"--for"),
                      (("suspend",), b"usage")):
        r = v.volleyctl(*args)
        assert r.returncode != 0 and err in (r.stderr + r.stdout).lower(), (args, r)


@pytest.mark.expect_errors
def test_sighup_reloads_rules_and_keeps_queued_mail(mailnet, volley_factory):
    v = _start(mailnet, volley_factory, '''
        rules = ( { name = "before"; match = [ "domain:h.test" ]; message_rate = "1/s"; } );
    ''', {"h.test": ("mx.h.test", "127.0.0.2")})
    host = mailnet.policing("127.0.0.2", "mx.h.test")
    sent = _inject(v, ["u%d@h.test" % i for i in range(30)], "hup")
    wait_until(lambda: len(host.accepted) >= 2, 10, "the first deliveries")
    assert _pairs(v)[("mx.h.test", "default")]["site_class"] == "before"
    # an invalid file is refused and the old rules stay
    rules = mailnet.dir / "shaping.conf"
    rules.write_text('rules = ( { name = "x"; match = [ "domain:h.test" ]; '
                     'message_rate = "fast"; } );\n')
    v.signal(signal.SIGHUP)
    wait_until(lambda: any(r.get("event") == "rules_reload" and r.get("level") == "error"
                           for r in v.log_records()), 10, "the refused reload")
    err = [r for r in v.log_records() if r.get("event") == "rules_reload"][-1]
    assert "shaping.conf:1" in err["msg"] and "message_rate" in err["msg"], err
    assert _pairs(v)[("mx.h.test", "default")]["site_class"] == "before"
    # a valid one takes effect without losing the queue
    rules.write_text('rules = ( { name = "after"; match = [ "domain:h.test" ]; '
                     'message_rate = "50/s"; } );\n')
    v.signal(signal.SIGHUP)
    wait_until(lambda: _pairs(v)[("mx.h.test", "default")]["site_class"] == "after", 10,
               "the new rules")
    wait_final(v, [(m, r) for m, r, _ in sent], timeout=20)
    _assert_all_once(host, sent)


@pytest.mark.parametrize("text,line,words", [
    ('defaults = {\n  max_connections = 4;\n  max_conections = 2;\n};\n', 3,
     ["defaults.max_conections", "unknown key"]),
    ('rules = (\n { name = "g"; match = [ "mx:*.google.com" ];\n   message_rate = "9/y"; }\n);\n',
     3, ["rules[0].message_rate", "bad rate"]),
    ('sources = ( { name = "a"; address = "127.0.0.50"; } );\n'
     'pools = ( { name = "default"; sources = [ "a" ]; },\n'
     '  { name = "p"; sources = [ "b" ]; } );\n', 3, ["unknown source", "b"]),
    ('responses = (\n { name = "r"; text = "(unclosed"; action = "bounce"; }\n);\n', 2,
     ["responses[0].text", "regular expression"]),
])
def test_invalid_rules_file_refused_with_its_line(tmp_path, text, line, words):
    rules = tmp_path / "rules.conf"
    rules.write_text(text)
    conf = tmp_path / "volley.conf"
    conf.write_text(render_config({"spool.dir": str(tmp_path / "spool"),
                                   "log.dir": str(tmp_path / "log"),
                                   "shaping.rules_file": str(rules)}))
    for mode in (["--check-config"], ["--foreground"]):
        r = subprocess.run([str(VOLLEYD), "-c", str(conf)] + mode, capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 1, (mode, r)
        assert "%s:%d:" % (rules, line) in r.stderr, (mode, r.stderr)
        for w in words:
            assert w in r.stderr, (mode, w, r.stderr)
