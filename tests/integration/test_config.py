"""Configuration checking, start-up failures and daemon mode."""

import os
import signal
import socket
import subprocess
import time

import pytest

from volley_harness import REPO, VOLLEYD, Volley, make_body, render_config


def _check(path):
    return subprocess.run([str(VOLLEYD), "-c", str(path), "--check-config"],
                          capture_output=True, text=True, timeout=10)


# (config text, line of the fault, words that must appear in the message)
BAD_CONFIGS = {
    "unknown_key": ('spool: {\n    dir = "/tmp/x";\n};\ninject: {\n    max_recipientz = 3;\n};\n',
                    5, ["inject.max_recipientz", "unknown key"]),
    "unknown_section": ('spool: {\n    dir = "/tmp/x";\n};\n\nsmtp: {\n    port = 25;\n};\n',
                        5, ["smtp", "unknown section"]),
    "out_of_range": ('inject: {\n    max_recipients = 0;\n};\n',
                     2, ["inject.max_recipients", "between 1 and 100000", "got 0"]),
    "out_of_range_high": ('spool: {\n    reserve_percent = 51;\n};\n',
                          2, ["spool.reserve_percent", "between 0 and 50"]),
    "wrong_type_int": ('\n\ninject: {\n    max_recipients = "three";\n};\n',
                       4, ["inject.max_recipients", "integer"]),
    "wrong_type_bool": ('spool: {\n    sync = 1;\n};\n', 2, ["spool.sync", "true or false"]),
    "wrong_type_string": ('spool: {\n    dir = 5;\n};\n', 2, ["spool.dir", "string"]),
    "wrong_type_list": ('inject: {\n    tcp_listen = 5;\n};\n', 2, ["inject.tcp_listen", "list"]),
    "bad_mode": ('control: {\n    mode = "0999";\n};\n', 2, ["control.mode", "octal"]),
    "bad_level": ('log: {\n    level = "verbose";\n};\n', 2, ["log.level", "verbose"]),
    "syntax_error": ('inject: {\n    max_recipients = 3;\n    max_errors = ;\n};\n',
                     3, ["syntax error"]),
    "unterminated": ('inject: {\n    hostname = "abc;\n};\n', None, ["syntax error"]),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_check_config_refuses(tmp_path, name):
    text, line, words = BAD_CONFIGS[name]
    path = tmp_path / ("%s.conf" % name)
    path.write_text(text)
    r = _check(path)
    assert r.returncode != 0, "accepted:\n%s" % text
    err = r.stderr
    assert err.count("\n") == 1, "want one line on stderr, got %r" % err
    if line is not None:
        assert "%s:%d:" % (path, line) in err, err
    else:
        assert "%s:" % path in err, err
    for w in words:
        assert w in err, "%r not in %r" % (w, err)
    assert r.stdout == ""


def test_check_config_good(tmp_path):
    v = Volley(tmp_path / "v", {"inject.max_recipients": 3, "spool.sync": False,
                                "log.level": "debug", "inject.unix_mode": "0600"})
    try:
        r = _check(v.conf_path)
        assert r.returncode == 0, r.stderr
        assert "configuration ok" in r.stdout
        # checking does not create the spool, sockets or logs
        assert not (tmp_path / "v" / "spool").exists()
        assert not os.path.exists(v.unix_socket)
    finally:
        v.cleanup()


def test_shipped_config_and_defaults_are_valid(tmp_path):
    r = _check(REPO / "conf" / "volley.conf")
    assert r.returncode == 0, r.stderr
    d = subprocess.run([str(VOLLEYD), "--print-defaults"], capture_output=True, text=True,
                       timeout=10)
    assert d.returncode == 0
    p = tmp_path / "defaults.conf"
    p.write_text(d.stdout)
    r = _check(p)
    assert r.returncode == 0, r.stderr
    for key in ("max_recipients = 1000;", "max_message_size = 10485760;", "pregreet_ms = 0;"):
        assert key in d.stdout


def test_missing_config_and_usage(tmp_path):
    r = _check(tmp_path / "nope.conf")
    assert r.returncode == 1 and "nope.conf" in r.stderr
    r = subprocess.run([str(VOLLEYD)], capture_output=True, text=True, timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr
    r = subprocess.run([str(VOLLEYD), "-c", "x", "--bogus"], capture_output=True, text=True,
                       timeout=10)
    assert r.returncode == 2 and "usage" in r.stderr


def test_start_with_bad_config_fails(tmp_path):
    p = tmp_path / "bad.conf"
    p.write_text('inject: {\n    max_recipients = 0;\n};\n')
    r = subprocess.run([str(VOLLEYD), "-c", str(p), "--foreground"], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode == 1 and "%s:2:" % p in r.stderr and "inject.max_recipients" in r.stderr


# ---------------------------------------------------------------- spool lock

@pytest.mark.expect_errors
def test_spool_locked_by_running_daemon(volley):
    msgid = volley.inject("s@example.org", ["r@example.com"], make_body("locked"))
    # the very same config: same spool, sockets and port
    for extra in (["--foreground"], []):
        r = subprocess.run([str(VOLLEYD), "-c", str(volley.conf_path)] + extra,
                           capture_output=True, text=True, timeout=15)
        assert r.returncode != 0, "second volleyd started (%s)" % extra
        assert "in use by another volleyd" in r.stderr, r.stderr
        assert volley.settings["spool.dir"] in r.stderr
    # the first daemon is unharmed: its sockets and pid file are still its own
    assert volley.running()
    assert volley.cat(msgid) == make_body("locked")
    assert volley.inject("s@example.org", ["r@example.com"], make_body("still"), unix=True)
    with open(volley.settings["daemon.pid_file"]) as f:
        assert int(f.read()) == volley.pid
    volley.assert_consistent()


def test_other_spool_same_sockets_refused(volley_factory, tmp_path):
    """A second daemon with another spool but the same unix socket must not steal the
    running daemon's socket."""
    a = volley_factory()
    b = volley_factory(dict(a.settings, **{"spool.dir": str(tmp_path / "spool2"),
                                           "inject.tcp_listen": [],
                                           "log.dir": str(tmp_path / "log2"),
                                           "daemon.pid_file": str(tmp_path / "b.pid")}),
                       start=False)
    b.expect_errors = True
    r = subprocess.run([str(VOLLEYD), "-c", str(b.conf_path), "--foreground"],
                       capture_output=True, text=True, timeout=15)
    assert r.returncode != 0
    assert a.inject("s@example.org", ["r@example.com"], make_body("mine"), unix=True)
    assert a.ctl({"cmd": "status"})["pid"] == a.pid


# ---------------------------------------------------------------- daemon mode

def _wait_gone(pid, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_daemonize_ready_when_parent_exits(tmp_path):
    v = Volley(tmp_path / "d")
    pid = None
    try:
        t0 = time.monotonic()
        r = subprocess.run([str(VOLLEYD), "-c", str(v.conf_path)], capture_output=True,
                           text=True, timeout=15)
        assert r.returncode == 0, r.stderr
        assert time.monotonic() - t0 < 10
        # ready means ready: no retry loop here
        with socket.create_connection(("127.0.0.1", v.port), timeout=5) as s:
            assert s.recv(100).startswith(b"220 ")
        assert v.ctl({"cmd": "status"})["ok"]
        with open(v.settings["daemon.pid_file"]) as f:
            pid = int(f.read().strip())
        assert v.ctl({"cmd": "status"})["pid"] == pid
        msgid = v.inject("s@example.org", ["r@example.com"], make_body("daemon"), unix=True)
        assert v.cat(msgid) == make_body("daemon")
        os.kill(pid, signal.SIGTERM)
        assert _wait_gone(pid), "daemon did not exit on SIGTERM"
        pid = None
        assert not os.path.exists(v.settings["daemon.pid_file"])
        assert not [x for x in v.log_records() if x.get("level") == "error"]
    finally:
        if pid:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        v.cleanup()


@pytest.mark.parametrize("mode", ["daemon", "foreground"])
def test_start_fails_when_port_taken(tmp_path, mode):
    v = Volley(tmp_path / "p")
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", v.port))
    blocker.listen(1)
    try:
        cmd = [str(VOLLEYD), "-c", str(v.conf_path)] + (["--foreground"] if mode == "foreground"
                                                         else [])
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=15)
        assert r.returncode != 0
        assert "listen" in r.stderr, r.stderr
        # nothing left running, no stale pid file
        assert not os.path.exists(v.settings["daemon.pid_file"])
        time.sleep(0.2)
        with pytest.raises(OSError):
            s = socket.socket(socket.AF_UNIX)
            try:
                s.connect(v.control_socket)
            finally:
                s.close()
    finally:
        blocker.close()
        v.cleanup()


def test_socket_modes(volley_factory):
    import stat
    v = volley_factory()
    assert stat.S_IMODE(os.stat(v.unix_socket).st_mode) == 0o660
    assert stat.S_IMODE(os.stat(v.control_socket).st_mode) == 0o600
    v.stop()
    v.settings["inject.unix_mode"] = "0606"
    v.settings["control.mode"] = "0640"
    v.start()
    assert stat.S_IMODE(os.stat(v.unix_socket).st_mode) == 0o606
    assert stat.S_IMODE(os.stat(v.control_socket).st_mode) == 0o640


def test_unix_socket_disabled(volley_factory):
    v = volley_factory({"inject.unix_socket": ""})
    assert not os.path.exists(os.path.join(os.path.dirname(v.control_socket), "inject.sock"))
    assert v.inject("s@example.org", ["r@example.com"], make_body("tcp only"))
