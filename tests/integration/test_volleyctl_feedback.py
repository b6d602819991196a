"""volleyctl suppress / forget against a real daemon; bounce parse offline on the
sample bounces of tests/unit/bounce; bounce ingest into a real feedback listener."""

import base64
import csv
import hashlib
import hmac
import io
import json
import struct
import subprocess
import time
from pathlib import Path

import pytest

from volley_harness import VOLLEYCTL, free_port, make_body

pytestmark = pytest.mark.needs_volleyctl

SAMPLES = Path(__file__).resolve().parents[1] / "unit" / "bounce"
SECRET = "integration-test-secret-0123"
BOUNCE_DOMAIN = "bounces.volley.test"


def _text(b):
    return b.decode("utf-8", "replace")


def _ok(r):
    assert r.returncode == 0, "exit %d\nstdout: %r\nstderr: %r" % (r.returncode, r.stdout,
                                                                   r.stderr)
    return _text(r.stdout)


def _ctl(conf, *args, stdin=None, timeout=60):
    """volleyctl -c conf ARGS, with stdin bytes (or nothing)."""
    return subprocess.run([str(VOLLEYCTL), "-c", str(conf)] + [str(a) for a in args],
                          input=stdin if stdin is not None else b"", capture_output=True,
                          timeout=timeout)


def _sample(name):
    p = SAMPLES / name
    if not p.exists():
        pytest.skip("sample %s not there" % name)
    return p


def _jlines(out):
    return [json.loads(l) for l in out.splitlines() if l.strip()]


# --------------------------------------------------------------------------- suppress


def test_suppress_add_check_list_remove(volley):
    v = volley
    v.inject("alice@example.org", ["x1@one.example", "keep@one.example", "z@two.example"],
             make_body("a"))
    out = _ok(v.volleyctl("suppress", "add", "X1@one.example", "@two.example", "--reason",
                          "hard-bounce", "--source", "manual test"))
    assert out.strip() == "suppressed 2 new, 0 already there, 2 queued recipients removed"
    assert v.queue()["total"]["recipients"] == 1
    # adding again counts as already there (and rewrites the record: same one here)
    out = _ok(v.volleyctl("suppress", "add", "x1@one.example", "@two.example", "--reason",
                          "hard-bounce", "--source", "manual test"))
    assert out.strip() == "suppressed 0 new, 2 already there, 0 queued recipients removed"
    _ok(v.volleyctl("suppress", "add", "y@three.example", "--scope", "list:news", "--expires",
                    "30d", "--no-purge"))

    out = _ok(v.volleyctl("suppress", "check", "x1@ONE.example"))
    assert out.startswith("suppressed: hard-bounce (global x1@one.example) since ")
    assert out.rstrip().endswith("source: manual test") and " until " not in out
    out = _ok(v.volleyctl("suppress", "check", "anyone@two.example"))
    assert out.startswith("suppressed: hard-bounce (global @two.example)")
    assert _ok(v.volleyctl("suppress", "check", "y@three.example")).strip() == "not suppressed"
    out = _ok(v.volleyctl("suppress", "check", "y@three.example", "--list", "news"))
    assert out.startswith("suppressed: manual (list:news y@three.example) since ")
    assert " until " in out
    j = json.loads(_ok(v.volleyctl("suppress", "check", "y@three.example", "--json")))
    assert j["ok"] is True and j["suppressed"] is False and j["address"] == "y@three.example"

    rows = _jlines(_ok(v.volleyctl("suppress", "list", "--json")))
    assert sorted((r["scope"], r["address"]) for r in rows) == [
        ("", "@two.example"), ("", "x1@one.example"), ("list:news", "y@three.example")]
    assert [r["address"] for r in _jlines(_ok(v.volleyctl("suppress", "list", "--json",
                                                          "--scope", "list:news")))] == [
        "y@three.example"]
    out = _ok(v.volleyctl("suppress", "list"))
    lines = out.splitlines()
    assert lines[0].split() == ["SCOPE", "ADDRESS", "REASON", "CREATED", "EXPIRES", "SOURCE"]
    assert len(lines) == 4 and "global" in out and "list:news" in out
    # aligned: every row has its ADDRESS where the header has it
    col = lines[0].index("ADDRESS")
    assert all(l[col - 2:col] == "  " and l[col] != " " for l in lines[1:])
    out = _ok(v.volleyctl("suppress", "list", "--limit", "1"))
    assert len(out.splitlines()) == 3 and "(first 1 shown" in out

    out = _ok(v.volleyctl("suppress", "remove", "x1@one.example", "nobody@one.example"))
    assert out.strip() == "removed 1 entry, 1 not found"
    assert _ok(v.volleyctl("suppress", "check", "x1@one.example")).strip() == "not suppressed"
    out = _ok(v.volleyctl("suppress", "remove", "y@three.example", "--scope", "list:news"))
    assert out.strip() == "removed 1 entry, 0 not found"


def test_suppress_export_import_round_trip(volley, tmp_path):
    v = volley
    _ok(v.volleyctl("suppress", "add", "a@one.example", "b@one.example", "--reason",
                    "complaint", "--source", 'said "stop", twice'))
    _ok(v.volleyctl("suppress", "add", "@spam.example", "--scope", "domain:shop.example",
                    "--expires", "2099-01-02"))
    exp = tmp_path / "export.csv"
    out = _ok(v.volleyctl("suppress", "export", exp))
    data = exp.read_bytes()
    assert data.startswith(b"address,scope,reason,created,expires,source\r\n")
    rows = list(csv.DictReader(io.StringIO(data.decode())))
    by = {r["address"]: r for r in rows}
    assert set(by) == {"a@one.example", "b@one.example", "@spam.example"}
    assert by["a@one.example"]["source"] == 'said "stop", twice'
    assert by["a@one.example"]["reason"] == "complaint" and by["a@one.example"]["scope"] == ""
    assert by["@spam.example"]["scope"] == "domain:shop.example"
    assert by["@spam.example"]["expires"] == "2099-01-02T00:00:00Z"
    # "-" and no FILE both write to stdout
    assert _ok(v.volleyctl("suppress", "export", "-")).encode() == data

    # the import of an export into an empty daemon gives the same entries back
    before = sorted(json.dumps(r, sort_keys=True) for r in
                    _jlines(_ok(v.volleyctl("suppress", "list", "--json"))))
    out = _ok(v.volleyctl("suppress", "remove", "a@one.example", "b@one.example"))
    out = _ok(v.volleyctl("suppress", "import", exp))
    assert out.strip() == ("read 3 entries: suppressed 2 new, 1 already there, "
                           "0 queued recipients removed")
    after = _jlines(_ok(v.volleyctl("suppress", "list", "--json")))
    strip = lambda rs: sorted((r["scope"], r["address"], r["reason"], r["expires"], r["source"])
                              for r in rs)
    assert strip(after) == strip(json.loads(x) for x in before)

    # a bad line: reported with its number, nothing sent
    bad = tmp_path / "bad.csv"
    bad.write_text("address,scope,reason\n"
                   "good1@four.example,,manual\n"
                   "not-an-address\n"
                   "good2@four.example,list:x,frobbed\n"
                   "\"unclosed@four.example\n")
    r = v.volleyctl("suppress", "import", bad)
    err = _text(r.stderr)
    assert r.returncode == 2, err
    assert "line 3:" in err and "not-an-address" in err
    assert "line 4:" in err and "frobbed" in err
    assert "line 5:" in err and "line 2:" not in err
    assert "nothing imported" in err
    assert _ok(v.volleyctl("suppress", "check", "good1@four.example")).strip() == \
        "not suppressed"

    # bare addresses from stdin, with the options as defaults
    r = _ctl(v.conf_path, "suppress", "import", "-", "--scope", "list:weekly", "--reason",
             "unsubscribe", stdin=b"one@five.example\r\n\r\n  two@five.example  \n")
    assert _ok(r).strip() == ("read 2 entries: suppressed 2 new, 0 already there, "
                              "0 queued recipients removed")
    out = _ok(v.volleyctl("suppress", "check", "two@five.example", "--list", "weekly"))
    assert out.startswith("suppressed: unsubscribe (list:weekly two@five.example)")
    assert "source: import" in out


def test_forget(volley):
    v = volley
    v.inject("alice@example.org", ["Erase.Me@one.example", "other@one.example"],
             make_body("f"))
    _ok(v.volleyctl("suppress", "add", "erase.me@one.example", "--no-purge"))
    _ok(v.volleyctl("suppress", "add", "erase.me@one.example", "--scope", "list:news"))
    out = _ok(v.volleyctl("forget", "Erase.Me@one.example"))
    assert out.startswith("forgot erase.me@one.example: its suppression entries were removed")
    assert "1 queued recipient removed" in out
    out = _ok(v.volleyctl("suppress", "check", "erase.me@one.example"))
    digest = hashlib.sha256(b"erase.me@one.example").hexdigest()
    assert out.startswith("suppressed: forgotten (global #%s) since " % digest)
    listing = _ok(v.volleyctl("suppress", "list"))
    assert "erase.me" not in listing and "#" + digest in listing
    export = _ok(v.volleyctl("suppress", "export"))
    assert "erase.me" not in export and "#" + digest in export
    assert v.queue()["total"]["recipients"] == 1
    # forgetting an address nobody suppressed still keeps its hash
    out = _ok(v.volleyctl("forget", "never@one.example"))
    assert "no suppression entry named it" in out


# --------------------------------------------------------------------------- bounce parse


@pytest.fixture
def noconf(tmp_path):
    """An empty config: every default, so built-in classification and no secret."""
    p = tmp_path / "empty.conf"
    p.write_text("")
    return p


def test_bounce_parse_samples(noconf):
    samples = sorted(SAMPLES.glob("*.eml"))
    assert samples, "no samples in %s" % SAMPLES
    checked = 0
    for eml in samples:
        golden = eml.with_suffix(".json")
        out = _jlines(_ok(_ctl(noconf, "bounce", "parse", "--json", eml)))
        assert out, eml
        for row in out:
            assert row["file"] == str(eml) and row["message"] == 1
            if row["kind"] in ("bounce", "delay"):
                assert row["category"] and isinstance(row["hard"], bool), row
            else:
                assert "category" not in row and "hard" not in row, row
            assert "msgid" not in row  # no secret, no token check
        if golden.exists():
            want = _jlines(golden.read_text())
            got = [{k: r[k] for k in ("kind", "recipient", "status")} for r in out]
            assert got == [{k: w.get(k) for k in ("kind", "recipient", "status")}
                           for w in want], eml.name
            checked += 1
    assert checked > 0

    known = {
        "gmail_511.eml": ("bounce", "nosuchperson@example.com", "5.1.1", "bad-mailbox", True),
        "arf_aol.eml": ("complaint", "dana.k@aol.example", "", None, None),
        "delay_dsn.eml": ("delay", "slowpoke@example.org", "4.4.1", None, False),
        "normal.eml": ("unparseable", "", "", None, None),
    }
    for name, (kind, rcpt, status, cat, hard) in known.items():
        row = _jlines(_ok(_ctl(noconf, "bounce", "parse", "--json", _sample(name))))[0]
        assert (row["kind"], row["recipient"], row["status"]) == (kind, rcpt, status), row
        if cat:
            assert row["category"] == cat
        if hard is not None:
            assert row["hard"] is hard
    assert "reason" in _jlines(_ok(_ctl(noconf, "bounce", "parse", "--json",
                                        _sample("normal.eml"))))[0]

    # the table: one row a recipient, the header first, exit 0 even when unparseable
    out = _ok(_ctl(noconf, "bounce", "parse", _sample("rfc3464_multi.eml")))
    lines = out.splitlines()
    assert lines[0].split() == ["MSG", "KIND", "RECIPIENT", "STATUS", "CATEGORY", "HARD",
                                "DIAGNOSTIC"]
    assert len(lines) == 1 + len(_jlines(_ok(_ctl(noconf, "bounce", "parse", "--json",
                                                  _sample("rfc3464_multi.eml")))))
    out = _ok(_ctl(noconf, "bounce", "parse", _sample("normal.eml")))
    assert "unparseable" in out


def _mbox(paths):
    """An mboxrd mailbox of the given messages (">From " quoting done)."""
    out = []
    for p in paths:
        out.append(b"From MAILER-DAEMON Thu Jan  1 00:00:00 2026\n")
        for line in p.read_bytes().replace(b"\r\n", b"\n").split(b"\n"):
            if line.lstrip(b">").startswith(b"From "):
                line = b">" + line
            out.append(line + b"\n")
        out.append(b"\n")
    return b"".join(out)


def test_bounce_parse_mbox(noconf, tmp_path):
    names = ["gmail_511.eml", "arf_aol.eml", "normal.eml"]
    box = tmp_path / "bounces.mbox"
    box.write_bytes(_mbox([_sample(n) for n in names]))
    rows = _jlines(_ok(_ctl(noconf, "bounce", "parse", "--json", box)))
    assert [(r["message"], r["kind"]) for r in rows] == [
        (1, "bounce"), (2, "complaint"), (3, "unparseable")]
    assert all(r["file"] == str(box) for r in rows)
    # stdin works the same way, and several inputs are numbered per file
    r = _ctl(noconf, "bounce", "parse", "--json", "-", _sample("gmail_511.eml"),
             stdin=box.read_bytes())
    rows = _jlines(_ok(r))
    assert [(r["file"], r["message"]) for r in rows] == [
        ("-", 1), ("-", 2), ("-", 3), (str(_sample("gmail_511.eml")), 1)]
    # a missing file: exit 1, the others still parsed
    r = _ctl(noconf, "bounce", "parse", "--json", tmp_path / "missing.eml", box)
    assert r.returncode == 1 and "missing.eml" in _text(r.stderr)
    assert len(_jlines(_text(r.stdout))) == 3


def _verp(secret, prefix, msgid, idx):
    """The VERP local part, as src/verp.h specifies it."""
    key = hashlib.sha256(b"volley-verp-key-v1\0" + secret.encode()).digest()
    sub = hmac.new(key, b"volley-verp-subkey-v1\0verp", hashlib.sha256).digest()
    body = struct.pack(">BQI", 1, msgid, idx)
    mac = hmac.new(sub, b"verp" + body, hashlib.sha256).digest()[:10]
    return prefix + "+" + base64.b32encode(body + mac).decode().rstrip("=").lower()


def test_bounce_parse_verp_msgid(tmp_path):
    conf = tmp_path / "v.conf"
    conf.write_text('feedback: {\n    secret = "%s";\n    bounce_domain = "%s";\n};\n'
                    % (SECRET, BOUNCE_DOMAIN))
    msgid = 0x0190AB12CD34EF5D
    good = _verp(SECRET, "bounce", msgid, 3)
    forged = _verp("another-secret-of-16+", "bounce", msgid, 3)
    src = _sample("gmail_511.eml").read_bytes()
    for local, want in ((good, "0190AB12CD34EF5D"), (forged, None)):
        eml = tmp_path / ("%s.eml" % local[:12])
        eml.write_bytes(b"Delivered-To: " + ("%s@%s" % (local, BOUNCE_DOMAIN)).encode() +
                        b"\n" + src)
        row = _jlines(_ok(_ctl(conf, "bounce", "parse", "--json", eml)))[0]
        assert row.get("msgid") == want, row
        assert "campaign" not in row  # only the daemon's sent records know it


# --------------------------------------------------------------------------- usage


@pytest.mark.parametrize("args", [
    ["suppress"],
    ["suppress", "frob"],
    ["suppress", "add"],
    ["suppress", "add", "not-an-address"],
    ["suppress", "add", "a@b.example", "--reason", "forgotten"],
    ["suppress", "add", "a@b.example", "--reason", "whim"],
    ["suppress", "add", "a@b.example", "--scope", "everyone"],
    ["suppress", "add", "a@b.example", "--expires", "2001-01-01"],
    ["suppress", "add", "a@b.example", "--expires", "3x"],
    ["suppress", "add", "a@b.example", "--expires", "2030-02-30"],
    ["suppress", "add", "a@b.example", "--frob"],
    ["suppress", "remove"],
    ["suppress", "check"],
    ["suppress", "check", "@b.example"],
    ["suppress", "check", "a@b.example", "c@d.example"],
    ["suppress", "list", "extra"],
    ["suppress", "list", "--limit", "0"],
    ["suppress", "list", "--scope", "bogus"],
    ["suppress", "export", "a", "b"],
    ["suppress", "import"],
    ["suppress", "import", "f.csv", "--reason", "whim"],
    ["forget"],
    ["forget", "@b.example"],
    ["forget", "a@b.example", "c@d.example"],
    ["bounce"],
    ["bounce", "frob"],
    ["bounce", "parse"],
    ["bounce", "parse", "--frob", "x.eml"],
    ["bounce", "ingest"],
    ["bounce", "ingest", "x.eml", "--to", "not-an-address"],
])
def test_bad_usage(tmp_path, args):
    # a socket that does not exist: usage errors come before any connection
    r = subprocess.run([str(VOLLEYCTL), "-s", str(tmp_path / "none.sock")] + args,
                       stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    err = _text(r.stderr)
    assert r.returncode == 2, "exit %d: %s" % (r.returncode, err)
    assert err.startswith("volleyctl: ") and "usage: volleyctl" in err


def test_daemon_not_running(tmp_path):
    r = subprocess.run([str(VOLLEYCTL), "-s", str(tmp_path / "none.sock"), "suppress", "check",
                        "a@b.example"], stdin=subprocess.DEVNULL, capture_output=True,
                       timeout=30)
    assert r.returncode == 1 and "cannot connect" in _text(r.stderr)


def test_bad_import_file_is_usage_error_without_daemon(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("ok@b.example\n\"a\"x@b.example\n")
    r = subprocess.run([str(VOLLEYCTL), "-s", str(tmp_path / "none.sock"), "suppress", "import",
                        str(bad)], stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
    assert r.returncode == 2 and "line 2: text after a closing quote" in _text(r.stderr)


# --------------------------------------------------------------------------- bounce ingest


def test_bounce_ingest(volley_factory, tmp_path):
    port = free_port()
    # volley.example: the feedback-loop address of the ARF samples
    v = volley_factory({"feedback.secret": SECRET, "feedback.bounce_domain": BOUNCE_DOMAIN,
                        "feedback.domains": ["volley.example"],
                        "feedback.listen": ["127.0.0.1:%d" % port]})
    # not a feedback domain: the listener is no relay
    r = v.volleyctl("bounce", "ingest", _sample("gmail_511.eml"), "--to",
                    "someone@elsewhere.example", "--server", "127.0.0.1:%d" % port)
    out = _text(r.stdout)
    assert r.returncode == 1, (out, _text(r.stderr))
    assert "message 1: refused: 550 5.7.1" in out
    assert "1 message: 0 accepted, 1 refused" in out

    # an ARF complaint to the feedback-loop address; the server from feedback.listen
    arf = _sample("arf_aol.eml")
    r = v.volleyctl("bounce", "ingest", arf, "--to", "fbl@" + BOUNCE_DOMAIN)
    out = _text(r.stdout)
    assert r.returncode == 0, (out, _text(r.stderr))
    assert out.splitlines() == ["message 1: accepted", "1 message: 1 accepted, 0 refused"]
    complainer = None
    for line in arf.read_text(errors="replace").splitlines():
        if line.lower().startswith("original-rcpt-to:"):
            complainer = line.split(":", 1)[1].strip().strip("<>")
    assert complainer
    deadline = time.monotonic() + 10
    while True:
        out = _ok(v.volleyctl("suppress", "check", complainer))
        if out.startswith("suppressed") or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert out.startswith("suppressed: complaint (global %s)" % complainer.lower()), out

    # an mbox over one connection, addressed by each message's own Delivered-To: the
    # middle one went to a domain that is not ours, and the session goes on after it
    box = tmp_path / "in.mbox"
    box.write_bytes(_mbox([_sample("arf_yahoo.eml"), _sample("gmail_511.eml"),
                           _sample("arf_jmrp.eml")]))
    r = v.volleyctl("bounce", "ingest", box)
    out = _text(r.stdout).splitlines()
    assert r.returncode == 1, (out, _text(r.stderr))
    assert out[0] == "message 1: accepted"
    assert out[1].startswith("message 2: refused: 550 5.7.1 ")
    assert out[2] == "message 3: accepted"
    assert out[3] == "3 messages: 2 accepted, 1 refused"

    # nobody listening: exit 1 with the reason
    r = v.volleyctl("bounce", "ingest", arf, "--server", "127.0.0.1:%d" % free_port())
    assert r.returncode == 1 and "cannot connect" in _text(r.stderr)
