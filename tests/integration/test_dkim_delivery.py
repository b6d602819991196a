"""DKIM at delivery: volleyd signs the bytes it actually sends (after VERP, the
unsubscribe headers it adds, and a 7-bit conversion for a host without 8BITMIME),
and an outside verifier (dkimpy) accepts the messages the receiving host got, with
the public keys published as TXT records by the test DNS server.  Also: keys by
From domain (and its parent), extra platform signatures, a bad key refused at
start naming the file, SMTPUTF8 only to hosts that offer it."""

import json
import os
import subprocess
from pathlib import Path

import pytest

from mailnet import acct_records, wait_final
from volley_harness import VOLLEYD, make_body, render_config

dkim = pytest.importorskip("dkim")

REPO = Path(__file__).resolve().parents[2]


def _genkey(dirpath, name, kind):
    path = Path(dirpath) / (name + ".pem")
    args = ["openssl", "genpkey", "-out", str(path)]
    args += ["-algorithm", "ED25519"] if kind == "ed25519" else \
        ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:%d" % int(kind[3:])]
    subprocess.run(args, check=True, capture_output=True)
    return path


def _dns_record(path, kind):
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64
    if kind == "ed25519":
        return "v=DKIM1; k=ed25519; p=" + base64.b64encode(der[-32:]).decode()
    return "v=DKIM1; k=rsa; p=" + base64.b64encode(der).decode()


def _verify(content, records):
    """dkimpy over every DKIM-Signature of content, TXT answers from records."""
    def dnsfunc(name, timeout=5):
        n = name.decode() if isinstance(name, bytes) else name
        rec = records.get(n.rstrip("."))
        return rec.encode() if rec else None
    d = dkim.DKIM(content)
    n = len([h for h in d.headers if h[0].lower() == b"dkim-signature"])
    out = []
    for i in range(n):
        try:
            out.append(d.verify(idx=i, dnsfunc=dnsfunc))
        except dkim.ValidationError as e:  # a mismatch, said as an exception
            out.append(False)
    return n, out


@pytest.fixture(params=[0, 2], ids=["inline", "threads"])
def sign_threads(request):
    """Every signing test runs twice: signed on the delivery thread, and by two
    signing threads while MAIL, RCPT and DATA are already out (dkim.sign_threads)."""
    return request.param


def _net(mailnet, volley_factory, tmp_path, sign_threads, keys, always=(), overrides=None):
    mailnet.start_dns(hosts={"mx.dk.test": "127.0.0.2", "mx.old.test": "127.0.0.3"},
                      mx=[("dk.test", "mx.dk.test", 10), ("old.test", "mx.old.test", 10)])
    host = mailnet.smtpd("127.0.0.2", "mx.dk.test", enable_SMTPUTF8=True)
    old = mailnet.smtpd("127.0.0.3", "mx.old.test", enable_SMTPUTF8=False)
    old.handler.eightbitmime = False
    records, entries, always_entries = {}, [], []
    for (domain, selector, kind) in list(keys) + list(always):
        path = _genkey(tmp_path, "%s-%s" % (domain, selector), kind)
        records["%s._domainkey.%s" % (selector, domain)] = _dns_record(path, kind)
        e = "%s:%s:%s" % (domain, selector, path)
        (always_entries if (domain, selector, kind) in always else entries).append(e)
    settings = {"dkim.keys": entries, "dkim.always": always_entries,
                "dkim.sign_threads": sign_threads}
    settings.update(overrides or {})
    v = volley_factory(mailnet.settings(settings))
    return v, host, old, records


def test_signed_messages_verify_with_dkimpy(mailnet, volley_factory, tmp_path, sign_threads):
    v, host, _, records = _net(mailnet, volley_factory, tmp_path, sign_threads,
                               [("example.org", "ed", "ed25519"), ("example.org", "rsa", "rsa2048")],
                               always=[("platform.test", "p1", "rsa1024")])
    bodies = [
        make_body("plain"),
        make_body("folded", extra_headers=("X-Long: " + "word " * 40 + "\r\n\tcontinued",
                                           "Subject2: a\r\n b\r\n c")),
        make_body("8bit", body_lines=("caf\u00e9 cr\u00e8me", "\u00fcber")),
        make_body("empty", body_lines=()),
        make_body("trailing", body_lines=("text", "", "", "")),
        make_body("dots", body_lines=(".leading dot", "..two", ".")),
    ]
    sent = []
    for i, b in enumerate(bodies):
        params = "BODY=8BITMIME" if i == 2 else ""
        sent.append((v.inject("news@example.org", ["u%d@dk.test" % i], b, params=params),
                     "u%d@dk.test" % i))
    final = wait_final(v, sent, timeout=15)
    envs = {e.rcpt_tos[0]: e for e in host.handler.envelopes}
    for key in sent:
        # the accounting record says which signatures the message carried
        assert final[key][-1]["dkim"] == ["example.org/ed", "example.org/rsa", "platform.test/p1"], \
            final[key][-1]
    for _, rcpt in sent:
        n, ok = _verify(envs[rcpt].content, records)
        # From domain's two keys (Ed25519 and RSA) plus the platform's
        assert n == 3 and ok == [True] * 3, (rcpt, n, ok, envs[rcpt].content[:600])
        assert b"d=example.org" in envs[rcpt].content and b"d=platform.test" in envs[rcpt].content
        assert b"l=" not in envs[rcpt].content.split(b"\r\n\r\n", 1)[0].replace(b"url=", b"")
    # a changed body no longer verifies: the check above is not vacuous
    c = envs["u0@dk.test"].content.replace(b"Hello.", b"Hellp.")
    assert _verify(c, records)[1] == [False] * 3
    # with signing threads MAIL goes out before the signatures are made, so SIZE=
    # declares room for them (4096 octets a signature); signed inline, the exact size
    for _, rcpt in sent:
        size = [int(o[5:]) for o in envs[rcpt].mail_options if o.upper().startswith("SIZE=")]
        n = len(envs[rcpt].content)
        if sign_threads:
            assert size and n < size[0] <= n + 3 * 4096, (rcpt, size, n)
        else:
            assert size == [n], (rcpt, size, n)
    names = [(Path("/proc/%d/task" % v.pid) / t / "comm").read_text().strip()
             for t in os.listdir("/proc/%d/task" % v.pid)]
    assert sum(t.startswith("dkim-sign/") for t in names) == sign_threads, names


def test_parent_domain_key_and_unsigned_domains(mailnet, volley_factory, tmp_path, sign_threads):
    v, host, _, records = _net(mailnet, volley_factory, tmp_path, sign_threads, [("example.org", "s1", "ed25519")])
    a = v.inject("x@news.example.org", ["a@dk.test"],
                 b"From: News <x@news.example.org>\r\nTo: a@dk.test\r\nSubject: s\r\n\r\nhi\r\n")
    c = v.inject("z@other.test", ["c@dk.test"],
                 b"From: z@other.test\r\nTo: c@dk.test\r\nSubject: s\r\n\r\nhi\r\n")
    final = wait_final(v, [(a, "a@dk.test"), (c, "c@dk.test")], timeout=10)
    assert final[(a, "a@dk.test")][-1]["dkim"] == ["example.org/s1"]
    assert "dkim" not in final[(c, "c@dk.test")][-1]
    envs = {e.rcpt_tos[0]: e for e in host.handler.envelopes}
    # news.example.org has no key of its own: example.org's signs (relaxed alignment)
    n, ok = _verify(envs["a@dk.test"].content, records)
    assert n == 1 and ok == [True] and b"d=example.org" in envs["a@dk.test"].content
    # a From domain without any key goes out unsigned
    assert b"DKIM-Signature" not in envs["c@dk.test"].content


def test_8bit_to_a_7bit_host_is_converted_before_signing(mailnet, volley_factory, tmp_path, sign_threads):
    v, _, old, records = _net(mailnet, volley_factory, tmp_path, sign_threads, [("example.org", "s1", "ed25519")])
    body = make_body("latin", body_lines=("na\u00efve caf\u00e9", "=plain= line"),
                     extra_headers=("MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"))
    m = v.inject("news@example.org", ["r@old.test"], body, params="BODY=8BITMIME")
    out = wait_final(v, [(m, "r@old.test")], timeout=10)
    assert out[(m, "r@old.test")][-1]["type"] == "delivered"
    got = old.handler.envelopes[0]
    assert all(b < 128 for b in got.content), got.content
    assert b"Content-Transfer-Encoding: quoted-printable" in got.content
    assert "BODY=8BITMIME" not in " ".join(got.mail_options)
    n, ok = _verify(got.content, records)
    assert n == 1 and ok == [True]
    import email
    import email.policy
    msg = email.message_from_bytes(got.content, policy=email.policy.default)
    assert "na\u00efve caf\u00e9" in msg.get_content()


def test_8bit_bounce_mode_and_smtputf8_needs_the_extension(mailnet, volley_factory, tmp_path, sign_threads):
    v, host, old, _ = _net(mailnet, volley_factory, tmp_path, sign_threads, [],
                           overrides={"delivery.eightbit": "bounce"})
    m = v.inject("news@example.org", ["r@old.test"], make_body("x", body_lines=("\u00e9",)),
                 params="BODY=8BITMIME")
    rec = wait_final(v, [(m, "r@old.test")], timeout=10)[(m, "r@old.test")][-1]
    assert (rec["type"], rec["code"], rec["enh"]) == ("bounced", 554, "5.6.3"), rec
    assert not old.handler.envelopes
    # SMTPUTF8 mail goes to the host that offers it, and bounces 5.6.7 at the one that does not
    u1 = v.inject("news@example.org", ["\u00fcser@dk.test"], make_body("u"), params="SMTPUTF8")
    u2 = v.inject("news@example.org", ["\u00fcser@old.test"], make_body("u"), params="SMTPUTF8")
    out = wait_final(v, [(u1, "\u00fcser@dk.test"), (u2, "\u00fcser@old.test")], timeout=10)
    assert out[(u1, "\u00fcser@dk.test")][-1]["type"] == "delivered"
    r2 = out[(u2, "\u00fcser@old.test")][-1]
    assert (r2["type"], r2["enh"]) == ("bounced", "5.6.7"), (r2, old.handler.envelopes)


def test_missing_key_file_is_a_startup_error_naming_it(tmp_path):
    conf = tmp_path / "v.conf"
    conf.write_text(render_config({"spool.dir": str(tmp_path / "spool"),
                                   "dkim.keys": ["example.org:s1:%s" % (tmp_path / "nope.pem")]}))
    r = subprocess.run([VOLLEYD, "-c", str(conf), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert str(tmp_path / "nope.pem") in r.stderr, r.stderr


def test_sighup_reloads_keys_and_keeps_the_old_ones_when_a_file_breaks(
        mailnet, volley_factory, tmp_path, sign_threads):
    import signal
    import time
    v, host, _, records = _net(mailnet, volley_factory, tmp_path, sign_threads, [("example.org", "s1", "ed25519")])
    key = tmp_path / "example.org-s1.pem"
    m1 = v.inject("news@example.org", ["k1@dk.test"], make_body("one"))
    wait_final(v, [(m1, "k1@dk.test")], timeout=10)
    # a broken key file: the reload is refused, named, and the old key still signs
    good = key.read_bytes()
    key.write_text("not a key\n")
    v.expect_errors = True
    v.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not [
            r for r in v.log_records() if r.get("event") == "rules_reload" and
            r.get("level") == "error"]:
        time.sleep(0.05)
    err = [r for r in v.log_records() if r.get("event") == "rules_reload" and
           r.get("level") == "error"]
    assert err and str(key) in err[-1]["msg"], err
    m2 = v.inject("news@example.org", ["k2@dk.test"], make_body("two"))
    wait_final(v, [(m2, "k2@dk.test")], timeout=10)
    # a new key at the same path: after SIGHUP the new key signs
    _genkey(tmp_path, "example.org-s1", "ed25519")
    records["s1._domainkey.example.org"] = _dns_record(key, "ed25519")
    v.signal(signal.SIGHUP)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and len([
            r for r in v.log_records() if r.get("event") == "rules_reload" and
            r.get("level") == "notice"]) == 0:
        time.sleep(0.05)
    m3 = v.inject("news@example.org", ["k3@dk.test"], make_body("three"))
    wait_final(v, [(m3, "k3@dk.test")], timeout=10)
    envs = {e.rcpt_tos[0]: e for e in host.handler.envelopes}
    assert _verify(envs["k3@dk.test"].content, records)[1] == [True]
    # the message signed with the old key no longer verifies against the new record
    assert _verify(envs["k2@dk.test"].content, records)[1] == [False]
    assert good != key.read_bytes()


def test_configured_header_list_is_signed(mailnet, volley_factory, tmp_path, sign_threads):
    # dkim.headers replaces the built-in list: the campaign header is signed (a
    # changed value no longer verifies), To is not (changing it still verifies),
    # and From is signed anyway, once more than it occurs
    v, host, _, records = _net(mailnet, volley_factory, tmp_path, sign_threads, [("example.org", "s1", "ed25519")],
                               overrides={"dkim.headers": ["Subject", "X-Campaign"]})
    body = make_body("hl", extra_headers=("X-Campaign: spring-42",))
    m = v.inject("news@example.org", ["h@dk.test"], body)
    wait_final(v, [(m, "h@dk.test")], timeout=10)
    got = host.handler.envelopes[0].content
    hdr = got.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b"").replace(b"\r\n ", b"")
    h_tag = [t.strip() for t in hdr.split(b"h=", 1)[1].split(b";", 1)[0].split(b":")]
    assert [t.lower() for t in h_tag] == [b"from", b"from", b"subject", b"x-campaign"], h_tag
    assert _verify(got, records)[1] == [True]
    assert _verify(got.replace(b"X-Campaign: spring-42", b"X-Campaign: spring-43"), records)[1] == [False]
    to_line = [ln for ln in got.split(b"\r\n") if ln.lower().startswith(b"to:")][0]
    assert _verify(got.replace(to_line, b"To: someone-else@dk.test"), records)[1] == [True]


@pytest.mark.parametrize("name", ["", "X Bad", "Subject:"])
def test_bad_header_name_is_a_config_error(tmp_path, name):
    conf = tmp_path / "v.conf"
    conf.write_text(render_config({"spool.dir": str(tmp_path / "spool"), "dkim.headers": ["From", name]}))
    r = subprocess.run([VOLLEYD, "-c", str(conf), "--check-config"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r
    assert "dkim.headers" in r.stderr and "not a header field name" in r.stderr, r.stderr


def test_per_recipient_copies_share_a_body_hash_and_verify(mailnet, volley_factory, tmp_path, sign_threads):
    # with VERP every recipient gets its own transaction and return path, and the
    # body hash is computed once per stored message; each copy must still verify,
    # also with two keys, and the 7-bit copy for the host without 8BITMIME (a body
    # of its own) must not reuse the 8-bit body's hash
    v, host, old, records = _net(
        mailnet, volley_factory, tmp_path, sign_threads,
        [("example.org", "ed", "ed25519"), ("example.org", "rsa", "rsa2048")],
        overrides={"feedback.secret": "0123456789abcdef0123", "feedback.bounce_domain": "bounces.example.org"})
    rcpts = ["a@dk.test", "b@dk.test", "c@old.test", "d@dk.test"]
    body = make_body("shared", body_lines=("caf\u00e9 for everyone", "line two"),
                     extra_headers=("MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8"))
    m = v.inject("news@example.org", rcpts, body, params="BODY=8BITMIME")
    final = wait_final(v, [(m, r) for r in rcpts], timeout=15)
    assert all(final[(m, r)][-1]["type"] == "delivered" for r in rcpts), final
    got = {e.rcpt_tos[0]: e for e in host.handler.envelopes + old.handler.envelopes}
    assert sorted(got) == sorted(rcpts)
    # one transaction each, with its own VERP return path
    assert len({e.mail_from for e in got.values()}) == len(rcpts), [e.mail_from for e in got.values()]
    for r in rcpts:
        n, ok = _verify(got[r].content, records)
        assert n == 2 and ok == [True, True], (r, ok, got[r].content[:800])
    assert b"quoted-printable" in got["c@old.test"].content
    assert b"caf\xc3\xa9" in got["a@dk.test"].content


def _bh(content):
    head = content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b"").replace(b"\r\n ", b"")
    sig = [l for l in head.split(b"\r\n") if l.lower().startswith(b"dkim-signature:")][0]
    return [t.strip()[3:] for t in sig.split(b";") if t.strip().startswith(b"bh=")][0]


def test_campaign_messages_sharing_a_body_and_look_alikes_verify(mailnet, volley_factory, tmp_path, sign_threads):
    # separate messages (a campaign's) with one body: the worker remembers that
    # body's hash across messages; bodies of the same length that differ in one
    # octet, and the 7-bit copy of an 8-bit body, must each get their own
    v, host, old, records = _net(mailnet, volley_factory, tmp_path, sign_threads,
                                 [("example.org", "ed", "ed25519")])
    shared = ("Our  spring\tnewsletter", "x" * 300, "caf\u00e9")
    bodies = {
        "a@dk.test": make_body("one", body_lines=shared),
        "b@dk.test": make_body("two, longer subject", body_lines=shared,
                               extra_headers=("MIME-Version: 1.0",)),
        "c@dk.test": make_body("three", body_lines=shared),
        "d@dk.test": make_body("four", body_lines=shared[:2] + ("caf\u00e8",)),
        "e@dk.test": make_body("five", body_lines=("Our  spring\tnewsletteR",) + shared[1:]),
        "f@old.test": make_body("six", body_lines=shared,
                                extra_headers=("MIME-Version: 1.0",
                                               "Content-Type: text/plain; charset=utf-8")),
    }
    sent = [(v.inject("news@example.org", [r], b, params="BODY=8BITMIME"), r)
            for r, b in bodies.items()]
    final = wait_final(v, sent, timeout=15)
    assert all(final[k][-1]["type"] == "delivered" for k in sent), final
    got = {e.rcpt_tos[0]: e.content for e in host.handler.envelopes + old.handler.envelopes}
    assert sorted(got) == sorted(bodies)
    for r, content in got.items():
        n, ok = _verify(content, records)
        assert n == 1 and ok == [True], (r, ok, content[:800])
    bh = {r: _bh(c) for r, c in got.items()}
    assert bh["a@dk.test"] == bh["b@dk.test"] == bh["c@dk.test"], bh
    assert len({bh["a@dk.test"], bh["d@dk.test"], bh["e@dk.test"], bh["f@old.test"]}) == 4, bh
    assert b"quoted-printable" in got["f@old.test"]


def test_transaction_refused_while_it_is_being_signed_then_retried(
        mailnet, volley_factory, tmp_path, sign_threads):
    # A 3.6 MB body keeps the signer busy for milliseconds, and the host refuses the
    # recipient at once the first time: with signing threads the transaction ends
    # while its signatures are still being made (their result is then dropped, the
    # recipient deferred); the retry sends one signed copy, which verifies.
    v, host, _, records = _net(mailnet, volley_factory, tmp_path, sign_threads,
                               [("example.org", "ed", "ed25519"), ("example.org", "rsa", "rsa2048")])
    host.handler.rcpt_script = lambda addr, n: "450 4.2.0 not now" if n == 1 else None
    body = make_body("big", body_lines=["line %d " % i + "x" * 900 for i in range(4000)])
    key = (v.inject("news@example.org", ["big@dk.test"], body), "big@dk.test")
    final = wait_final(v, [key], timeout=30)
    recs = acct_records(v)
    deferred = [r for r in recs if r.get("type") == "deferred" and r.get("recipient") == "big@dk.test"]
    assert deferred and "not now" in json.dumps(deferred[0]), recs
    assert final[key][-1]["type"] == "delivered" and final[key][-1]["dkim"] == \
        ["example.org/ed", "example.org/rsa"], final[key]
    envs = [e for e in host.handler.envelopes if e.rcpt_tos == ["big@dk.test"]]
    assert len(envs) == 1
    n, ok = _verify(envs[0].content, records)
    assert n == 2 and ok == [True, True], (n, ok)
    assert v.proc.poll() is None


def test_signed_over_starttls_small_and_large(mailnet, volley_factory, tmp_path, sign_threads,
                                              tls_cert):
    # Over STARTTLS the TLS filter writes the text, and a text over 256 KB is
    # refilled as the output drains: the signatures must still go in front, once,
    # whether the text was made before or after the 354.
    import ssl
    mailnet.start_dns(hosts={"mx.tls.test": "127.0.0.2"}, mx=[("tls.test", "mx.tls.test", 10)])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(tls_cert[0]), str(tls_cert[1]))
    host = mailnet.smtpd("127.0.0.2", "mx.tls.test", tls_context=ctx)
    path = _genkey(tmp_path, "ed", "ed25519")
    records = {"ed._domainkey.example.org": _dns_record(path, "ed25519")}
    v = volley_factory(mailnet.settings({"delivery.tls": "required",
                                         "dkim.keys": ["example.org:ed:%s" % path],
                                         "dkim.sign_threads": sign_threads}))
    small = make_body("small over tls")
    large = make_body("large over tls", body_lines=["%06d " % i + "y" * 70 for i in range(8000)])
    sent = [(v.inject("news@example.org", ["s@tls.test"], small), "s@tls.test"),
            (v.inject("news@example.org", ["l@tls.test"], large), "l@tls.test")]
    final = wait_final(v, sent, timeout=30)
    for key in sent:
        assert final[key][-1]["type"] == "delivered" and final[key][-1]["tls"], final[key]
    envs = {e.rcpt_tos[0]: e for e in host.handler.envelopes}
    for rcpt, body in (("s@tls.test", small), ("l@tls.test", large)):
        e = envs[rcpt]
        assert e.tls
        assert e.content.count(b"DKIM-Signature:") == 1
        assert e.content.endswith(body)  # the text whole, behind the signature
        assert _verify(e.content, records) == (1, [True])
