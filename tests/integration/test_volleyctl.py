"""volleyctl against a real daemon: every command, exit statuses, bad usage."""

import json

import pytest

from volley_harness import make_body

pytestmark = pytest.mark.needs_volleyctl


@pytest.fixture
def loaded(volley):
    """Three messages: two domains, two campaigns and one without."""
    ids = {
        "a": volley.inject("alice@example.org", ["x1@one.example", "x2@two.example"],
                           make_body("a", extra_headers=["X-Volley-Campaign: spring"])),
        "b": volley.inject("bob@example.org", ["y1@one.example"],
                           make_body("b", extra_headers=["X-Volley-Campaign: autumn"],
                                     body_lines=[".dot", "caf\u00e9", "\x01ctl"])),
        "c": volley.inject("", ["z1@two.example", "z2@two.example", "z3@one.example"],
                           make_body("c")),
    }
    return volley, ids


def _ok(r):
    assert r.returncode == 0, "exit %d\nstdout: %r\nstderr: %r" % (r.returncode, r.stdout,
                                                                   r.stderr)
    return r.stdout.decode("utf-8", "replace")


def _qjson(v, *args):
    return json.loads(_ok(v.volleyctl("queue", "--json", *args)))


def test_status(loaded):
    v, ids = loaded
    out = _ok(v.volleyctl("status"))
    assert "3 messages, 6 recipients, 6 due" in out
    assert str(v.pid) in out
    st = json.loads(_ok(v.volleyctl("status", "--json")))
    assert st["ok"] and st["queue"] == {"messages": 3, "recipients": 6, "due": 6}
    assert st["pid"] == v.pid


def test_queue(loaded):
    v, ids = loaded
    q = _qjson(v)
    assert q["total"] == {"messages": 3, "recipients": 6}
    assert q["by_state"] == {"queued": 6, "deferred": 0, "held": 0}
    assert q["by_domain"]["one.example"]["queued"] == 3
    assert q["by_domain"]["two.example"]["queued"] == 3
    assert q["by_campaign"]["spring"]["queued"] == 2
    assert q["by_campaign"][""]["queued"] == 3
    assert _qjson(v, "--domain", "two.example")["total"] == {"messages": 2, "recipients": 3}
    assert _qjson(v, "--campaign", "autumn")["total"] == {"messages": 1, "recipients": 1}
    assert _qjson(v, "--campaign", "")["total"] == {"messages": 1, "recipients": 3}
    out = _ok(v.volleyctl("queue"))
    assert "3 messages, 6 recipients" in out
    assert "one.example" in out and "spring" in out and "(none)" in out


def test_list(loaded):
    v, ids = loaded
    out = _ok(v.volleyctl("list"))
    for msgid in ids.values():
        assert msgid in out
    assert "alice@example.org" in out and "spring" in out
    j = json.loads(_ok(v.volleyctl("list", "--json")))
    assert [m["id"] for m in j["messages"]] == sorted(ids.values())
    assert j["truncated"] is False
    j = json.loads(_ok(v.volleyctl("list", "--json", "--limit", "2")))
    assert len(j["messages"]) == 2 and j["truncated"] is True
    j = json.loads(_ok(v.volleyctl("list", "--json", "--campaign", "spring")))
    assert [m["id"] for m in j["messages"]] == [ids["a"]]
    j = json.loads(_ok(v.volleyctl("list", "--json", "--domain", "ONE.example")))
    assert sorted(m["id"] for m in j["messages"]) == sorted(ids.values())


def test_show(loaded):
    v, ids = loaded
    out = _ok(v.volleyctl("show", ids["a"]))
    assert ids["a"] in out and "alice@example.org" in out and "spring" in out
    assert "x1@one.example" in out and "x2@two.example" in out
    assert "Subject: a" in out
    # lower-case ids are accepted
    out2 = _ok(v.volleyctl("show", ids["a"].lower()))
    assert out2 == out
    j = json.loads(_ok(v.volleyctl("show", "--json", ids["c"])))
    assert j["sender"] == "" and len(j["recipients"]) == 3
    assert j == v.show(ids["c"])


def test_cat_is_byte_exact(loaded):
    v, ids = loaded
    for msgid in ids.values():
        r = v.volleyctl("cat", msgid)
        assert r.returncode == 0 and r.stderr == b""
        assert r.stdout == v.cat(msgid)
    assert v.volleyctl("cat", ids["b"]).stdout == make_body(
        "b", body_lines=[".dot", "caf\u00e9", "\x01ctl"])


def test_cat_large_message(volley):
    body = make_body("large", body_lines=["%06d " % i + "L" * 90 for i in range(30000)])
    assert len(body) > 2_000_000
    msgid = volley.inject("s@example.org", ["r@example.com"], body)
    r = volley.volleyctl("cat", msgid)
    assert r.returncode == 0 and r.stdout == body


def test_hold_release_delete_by_id(loaded):
    v, ids = loaded
    assert _ok(v.volleyctl("hold", ids["c"])).strip() == "held 3 recipients in 1 message"
    q = _qjson(v)
    assert q["by_state"] == {"queued": 3, "deferred": 0, "held": 3}
    assert [r["state"] for r in v.show(ids["c"])["recipients"]] == ["held"] * 3
    assert _ok(v.volleyctl("release", "--id", ids["c"])).strip() == \
        "released 3 recipients in 1 message"
    assert _qjson(v)["by_state"] == {"queued": 6, "deferred": 0, "held": 0}
    assert _ok(v.volleyctl("delete", ids["b"])).strip() == \
        "deleted 1 recipient, removed 1 message"
    assert set(v.list()) == {ids["a"], ids["c"]}
    assert _qjson(v)["total"] == {"messages": 2, "recipients": 5}
    v.assert_consistent()


def test_hold_release_delete_by_domain(loaded):
    v, ids = loaded
    assert _ok(v.volleyctl("hold", "--domain", "one.example")).strip() == \
        "held 3 recipients in 3 messages"
    q = _qjson(v)
    assert q["by_domain"]["one.example"] == {"queued": 0, "deferred": 0, "held": 3}
    assert q["by_domain"]["two.example"] == {"queued": 3, "deferred": 0, "held": 0}
    assert _ok(v.volleyctl("release", "--domain=one.example")).strip() == \
        "released 3 recipients in 3 messages"
    # every message keeps a recipient in one.example: none is removed
    assert _ok(v.volleyctl("delete", "--domain", "two.example")).strip() == \
        "deleted 3 recipients, removed 0 messages"
    assert set(v.list()) == set(ids.values())
    assert _qjson(v)["by_domain"] == {"one.example": {"queued": 3, "deferred": 0, "held": 0}}
    assert _ok(v.volleyctl("delete", "--domain", "one.example")).strip() == \
        "deleted 3 recipients, removed 3 messages"
    assert v.list() == {}
    v.assert_consistent()


def test_hold_release_delete_by_campaign(loaded):
    v, ids = loaded
    assert _ok(v.volleyctl("hold", "--campaign", "spring")).strip() == \
        "held 2 recipients in 1 message"
    q = _qjson(v)
    assert q["by_campaign"]["spring"] == {"queued": 0, "deferred": 0, "held": 2}
    assert q["by_campaign"]["autumn"] == {"queued": 1, "deferred": 0, "held": 0}
    # nothing matches: ok, zero
    assert _ok(v.volleyctl("hold", "--campaign", "winter")).strip() == \
        "held 0 recipients in 0 messages"
    assert _ok(v.volleyctl("delete", "--campaign", "spring")).strip() == \
        "deleted 2 recipients, removed 1 message"
    assert set(v.list()) == {ids["b"], ids["c"]}
    v.assert_consistent()


def test_verify_and_log_rotate(loaded):
    v, ids = loaded
    assert "no violations" in _ok(v.volleyctl("verify"))
    assert _ok(v.volleyctl("log", "rotate")).strip() == "log files reopened"


@pytest.mark.parametrize("args", [
    [],
    ["bogus"],
    ["status", "extra"],
    ["show"],
    ["show", "nothex"],
    ["show", "0123456789ABCDEF0"],
    ["cat"],
    ["hold"],
    ["hold", "0123456789ABCDEF", "--domain", "x.example"],
    ["delete", "--domain", ""],
    ["list", "--limit", "0"],
    ["list", "--limit", "-5"],
    ["list", "--limit"],
    ["queue", "--frobnicate"],
    ["log"],
    ["log", "spin"],
    ["status", "--json", "--json"],
])
def test_bad_usage(loaded, args):
    v, ids = loaded
    snap = v.snapshot()
    r = v.volleyctl(*args)
    assert r.returncode == 2, (args, r)
    err = r.stderr.decode()
    assert "usage: volleyctl" in err, err
    assert r.stdout == b""
    v.assert_intact(snap)


def test_unknown_id(loaded):
    v, ids = loaded
    for cmd in ("show", "cat"):
        r = v.volleyctl(cmd, "0123456789ABCDEF")
        assert r.returncode == 1, r
        assert r.stdout == b""
        err = r.stderr.decode()
        assert err.count("\n") == 1 and "no such message" in err, err


def test_daemon_not_running(loaded):
    v, ids = loaded
    assert v.stop() == 0
    for args in (["status"], ["list"], ["cat", ids["a"]], ["hold", "--domain", "x.example"]):
        r = v.volleyctl(*args, timeout=20)
        assert r.returncode == 1, (args, r)
        err = r.stderr.decode()
        assert err.count("\n") == 1, "want one line, got %r" % err
        assert v.control_socket in err
        assert r.stdout == b""


def test_socket_option_and_env(loaded, monkeypatch):
    v, ids = loaded
    r = v.volleyctl("-s", v.control_socket, "status", config=False)
    assert r.returncode == 0, r
    import os
    import subprocess
    from volley_harness import VOLLEYCTL
    env = dict(os.environ, VOLLEY_CONF=str(v.conf_path))
    r = subprocess.run([str(VOLLEYCTL), "status"], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r


def test_bad_config_for_volleyctl(volley, tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text("inject: {\n    max_recipients = 0;\n};\n")
    import subprocess
    from volley_harness import VOLLEYCTL
    r = subprocess.run([str(VOLLEYCTL), "-c", str(p), "status"], capture_output=True, timeout=30)
    assert r.returncode == 1
    assert b"%s:2:" % str(p).encode() in r.stderr


def test_show_escapes_terminal_controls(volley):
    """Header text comes from outside: `show` must not pass ESC, BEL, other C0/C1
    controls or DEL to the terminal; --json and cat stay exact."""
    body = (b"Subject: \x1b[31mred\x1b[0m \x07bell \x7fdel \xc2\x9bcsi\r\n"
            b"X-Tab: a\tb\r\n\r\nbody \x1b]0;title\x07\r\n")
    msgid = volley.inject("s@example.org", ["r@example.com"], body, params="BODY=8BITMIME")
    out = volley.volleyctl("show", msgid)
    assert out.returncode == 0, out
    for bad in (b"\x1b", b"\x07", b"\x7f", b"\xc2\x9b"):
        assert bad not in out.stdout, "raw %r reached the terminal: %r" % (bad, out.stdout)
    assert b"red" in out.stdout and b"bell" in out.stdout
    j = json.loads(volley.volleyctl("show", "--json", msgid).stdout)
    assert j["headers"] == body[:body.index(b"\r\n\r\n") + 2].decode()
    assert volley.volleyctl("cat", msgid).stdout == body
