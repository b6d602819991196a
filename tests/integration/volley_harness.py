"""
volley_harness - start the real volleyd and talk to it: SMTP, control socket, logs.

Used by conftest.py (fixtures) and the test modules.  Only the standard library:
the SMTP client here is a raw socket one on purpose, so tests can send exactly the
bytes they mean (pipelined groups, bare LFs, over-long lines) and read each reply
as the daemon wrote it.

Every wait is bounded: sockets carry timeouts, loops carry deadlines.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("VOLLEY_BUILD", str(REPO / "build"))).resolve()
VOLLEYD = BUILD / "volleyd"
VOLLEYCTL = BUILD / "volleyctl"

HOSTNAME = "volley.test"
QUEUED_RE = re.compile(r"^250 2\.0\.0 Ok: queued as ([0-9A-Fa-f]{16})$")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


# --------------------------------------------------------------------------- config

_dns_blackhole = None


def dns_blackhole():
    """"127.0.0.1:PORT" of a UDP socket of this process that never answers.

    It is every daemon's default dns.servers (with a long dns.timeout_ms), so that a
    test that turns delivery.enabled on without a mail world of its own (mailnet.py)
    has its lookups wait for the whole test: nothing leaves the machine.  Delivery
    tests override dns.servers with their own dnsmasq."""
    global _dns_blackhole
    if _dns_blackhole is None:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        _dns_blackhole = s
    return "127.0.0.1:%d" % _dns_blackhole.getsockname()[1]


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def render_value(v):
    """One libconfig value: strings quoted, booleans true/false, lists [ ... ]."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        if not v:
            return "[ ]"
        return "[ " + ", ".join(render_value(x) for x in v) + " ]"
    raise TypeError("cannot render %r as a libconfig value" % (v,))


def render_config(settings):
    """{"inject.max_recipients": 3, ...} -> 'inject: {\\n    max_recipients = 3;\\n};'.
    A value of None leaves the key out (so the daemon's default applies)."""
    groups = {}
    for key, val in settings.items():
        if val is None:
            continue
        group, name = key.split(".", 1)
        groups.setdefault(group, []).append((name, val))
    out = []
    for group, items in groups.items():
        out.append("%s: {" % group)
        for name, val in items:
            out.append("    %s = %s;" % (name, render_value(val)))
        out.append("};")
    return "\n".join(out) + "\n"


# --------------------------------------------------------------------------- SMTP


class Reply:
    """One SMTP reply: its lines without CRLF (str, decoded as UTF-8 with replacement)."""

    def __init__(self, lines):
        self.lines = lines

    @property
    def code(self):
        return int(self.lines[0][:3])

    @property
    def last(self):
        return self.lines[-1]

    def __str__(self):
        return " | ".join(self.lines)

    __repr__ = __str__


def expect(reply, code_enh, text=None):
    """Assert reply is exactly `code enhanced-code ...` on every line, e.g. "550 5.6.0".
    The reply code and the enhanced status code are both checked, not just the class."""
    code, _, enh = code_enh.partition(" ")
    assert reply is not None, "expected %s, got no reply" % code_enh
    for i, line in enumerate(reply.lines):
        sep = " " if i == len(reply.lines) - 1 else "-"
        assert line[:4] == code + sep, "expected %s, got %s" % (code_enh, reply)
        rest = line[4:]
        if enh:
            assert rest == enh or rest.startswith(enh + " "), "expected %s, got %s" % (
                code_enh, reply)
    if text is not None:
        assert text in reply.last, "expected %r in %s" % (text, reply)
    return reply


def queued_id(reply):
    """The message id of a "250 2.0.0 Ok: queued as ID" reply (assert it is one)."""
    assert len(reply.lines) == 1, reply
    m = QUEUED_RE.match(reply.lines[0])
    assert m, "expected '250 2.0.0 Ok: queued as <16 hex>', got %s" % reply
    return m.group(1).upper()


def dot_stuff(body):
    """The DATA wire form of body (CRLF lines): leading dots doubled, no final dot."""
    assert body == b"" or body.endswith(b"\r\n"), "body must end in CRLF"
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in body.split(b"\r\n"))


class ConnectionClosed(Exception):
    pass


class SMTPConn:
    """A raw SMTP client connection.  send() writes exactly the given bytes."""

    def __init__(self, sock, timeout=10.0):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.buf = b""

    @classmethod
    def tcp(cls, port, timeout=10.0):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        return cls(s, timeout)

    @classmethod
    def unix(cls, path, timeout=10.0):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        s.connect(str(path))
        return cls(s, timeout)

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def read_line(self):
        """One line up to and including LF, CRLF stripped (bytes)."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionClosed("connection closed; unread: %r" % self.buf)
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        assert line.endswith(b"\r"), "reply line not ended by CRLF: %r" % line
        return line[:-1]

    def read_reply(self):
        lines = []
        while True:
            raw = self.read_line()
            line = raw.decode("utf-8", "replace")
            assert len(line) >= 3 and line[:3].isdigit(), "malformed reply line %r" % line
            lines.append(line)
            if len(line) == 3 or line[3] == " ":
                return Reply(lines)
            assert line[3] == "-", "malformed reply line %r" % line

    def cmd(self, line):
        if isinstance(line, str):
            line = line.encode("utf-8")
        self.send(line + b"\r\n")
        return self.read_reply()

    def greeting(self):
        r = self.read_reply()
        expect_code(r, 220)
        return r

    def ehlo(self, name="client.test"):
        r = self.cmd("EHLO " + name)
        expect_code(r, 250)
        return r

    def mail(self, sender, params=""):
        return self.cmd("MAIL FROM:<%s>%s" % (sender, (" " + params) if params else ""))

    def rcpt(self, addr):
        return self.cmd("RCPT TO:<%s>" % addr)

    def send_message(self, sender, rcpts, body, params=""):
        """A whole transaction; every step before the final dot must succeed.  Returns
        the reply to the final dot."""
        expect(self.mail(sender, params), "250 2.1.0")
        for r in rcpts:
            expect(self.rcpt(r), "250 2.1.5")
        expect(self.cmd("DATA"), "354")
        self.send(dot_stuff(body) + b".\r\n")
        return self.read_reply()

    def data_raw(self, wire):
        """After a 354: send the already encoded text (final dot included) and read the
        reply to it."""
        self.send(wire)
        return self.read_reply()

    def wait_closed(self, timeout=5.0):
        """True if the peer closes the connection within timeout (any unread replies
        are returned in the second element)."""
        deadline = time.monotonic() + timeout
        extra = b""
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False, self.buf + extra
            except (ConnectionResetError, BrokenPipeError):
                return True, self.buf + extra
            if not chunk:
                return True, self.buf + extra
            extra += chunk
        return False, self.buf + extra

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def expect_code(reply, code):
    assert reply.code == code, "expected %d, got %s" % (code, reply)
    return reply


def make_body(subject="test", extra_headers=(), body_lines=("Hello.",)):
    lines = ["From: sender@example.org", "To: rcpt@example.com", "Subject: " + subject]
    lines += list(extra_headers)
    lines.append("")
    lines += list(body_lines)
    return ("\r\n".join(lines) + "\r\n").encode("utf-8")


# --------------------------------------------------------------------------- daemon


class VolleyError(Exception):
    pass


class Volley:
    """One volleyd instance under test: its config, process, sockets and logs."""

    def __init__(self, tmp_path, overrides=None):
        self.tmp = Path(tmp_path)
        self.tmp.mkdir(parents=True, exist_ok=True)
        # sun_path is 108 bytes: keep sockets under a short directory of their own
        self.sockdir = Path(tempfile.mkdtemp(prefix="vt", dir="/tmp"))
        self.port = free_port()
        self.settings = {
            "spool.dir": str(self.tmp / "spool"),
            "inject.unix_socket": str(self.sockdir / "inject.sock"),
            "inject.tcp_listen": ["127.0.0.1:%d" % self.port],
            "inject.hostname": HOSTNAME,
            "control.socket": str(self.sockdir / "control.sock"),
            "log.dir": str(self.tmp / "log"),
            "daemon.pid_file": str(self.tmp / "volleyd.pid"),
            # no delivery unless a test asks for it (mailnet.settings() turns it on);
            # and should a test enable it without a DNS server of its own, lookups
            # go nowhere (see dns_blackhole())
            "delivery.enabled": False,
            "dns.servers": [dns_blackhole()],
            "dns.timeout_ms": 60000,
            "dns.tries": 10,
            # most tests compare stored bytes with what they injected, some inject
            # bodies that are no RFC 5322 message at all (empty, every octet); the
            # message preparation has tests of its own (test_message_prep.py)
            "inject.add_message_id": False,
            "inject.add_date": False,
            "inject.require_from": False,
        }
        self.settings.update(overrides or {})
        self.conf_path = self.tmp / "volley.conf"
        self.stderr_path = self.tmp / "volleyd.stderr"
        self.proc = None
        self.expect_errors = False
        self.starts = 0
        self.killed = False  # kill9() was used: a non-zero exit status is expected
        self.write_config()

    # -- paths
    @property
    def unix_socket(self):
        return self.settings["inject.unix_socket"]

    @property
    def control_socket(self):
        return self.settings["control.socket"]

    @property
    def log_path(self):
        return Path(self.settings["log.dir"]) / "volleyd.log"

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def write_config(self):
        self.conf_path.write_text(render_config(self.settings))

    # -- lifecycle
    def start(self, timeout=START_TIMEOUT, probe_tcp=True):
        assert self.proc is None or self.proc.poll() is not None, "volleyd already running"
        self.write_config()
        with open(self.stderr_path, "ab") as err:
            self.proc = subprocess.Popen(
                [str(VOLLEYD), "-c", str(self.conf_path), "--foreground"],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                start_new_session=True)
        self.starts += 1
        self.killed = False
        self.wait_ready(timeout, probe_tcp)
        return self

    def wait_ready(self, timeout=START_TIMEOUT, probe_tcp=True):
        """Until the TCP port accepts and the control socket answers; fail fast if the
        process dies.  (The control socket is bound after the injection listeners.)"""
        deadline = time.monotonic() + timeout
        tcp_ok = not probe_tcp
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise VolleyError("volleyd exited with %d during start-up:\n%s"
                                  % (rc, self.stderr_tail()))
            try:
                if not tcp_ok and self.settings.get("inject.tcp_listen"):
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        pass
                tcp_ok = True
                if self.ctl({"cmd": "status"}, timeout=2).get("ok"):
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.02)
        raise VolleyError("volleyd not ready after %.0f s:\n%s" % (timeout, self.stderr_tail()))

    def stderr_tail(self, n=30):
        try:
            return "\n".join(self.stderr_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no stderr)"

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait (bounded); SIGKILL if it does not stop.  Returns the exit
        status, or raises when it had to be killed."""
        if not self.running():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise VolleyError("volleyd did not exit within %.0f s of SIGTERM" % timeout)

    def died(self):
        """A description when the daemon exited on its own with a non-zero status (a
        crash, an abort) rather than by kill9() or a clean SIGTERM exit; else None."""
        if self.proc is None or self.proc.poll() is None or self.killed:
            return None
        if self.proc.returncode == 0:
            return None
        return "volleyd (pid %d) died during the test with status %d:\n%s" % (
            self.proc.pid, self.proc.returncode, self.stderr_tail())

    def kill9(self):
        self.killed = True
        if self.running():
            self.proc.kill()
        self.proc.wait(5)

    def restart(self):
        rc = self.stop()
        assert rc == 0, "volleyd exited with %r on SIGTERM" % rc
        return self.start()

    def cleanup(self):
        if self.running():
            self.proc.kill()
            self.proc.wait(5)
        shutil.rmtree(self.sockdir, ignore_errors=True)

    # -- control socket
    def ctl_exchange(self, req, timeout=30.0):
        """Send one request; return (reply dict, raw bytes that followed for cat)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(timeout)
        try:
            s.connect(self.control_socket)
            s.sendall(json.dumps(req).encode() + b"\n")
            buf = b""
            while b"\n" not in buf:
                chunk = s.recv(65536)
                if not chunk:
                    raise VolleyError("control socket closed without a reply to %r" % (req,))
                buf += chunk
            line, rest = buf.split(b"\n", 1)
            reply = json.loads(line)
            if req.get("cmd") == "cat" and reply.get("ok"):
                size = reply["size"]
                while len(rest) < size:
                    chunk = s.recv(size - len(rest))
                    if not chunk:
                        raise VolleyError("control socket closed after %d of %d bytes"
                                          % (len(rest), size))
                    rest += chunk
                assert len(rest) == size, "more bytes than announced after cat"
            return reply, rest
        finally:
            s.close()

    def ctl(self, req, timeout=30.0):
        return self.ctl_exchange(req, timeout)[0]

    def cat(self, msgid):
        reply, data = self.ctl_exchange({"cmd": "cat", "id": msgid})
        assert reply.get("ok"), "cat %s: %r" % (msgid, reply)
        return data

    def show(self, msgid):
        reply = self.ctl({"cmd": "show", "id": msgid})
        assert reply.get("ok"), "show %s: %r" % (msgid, reply)
        return reply

    def list(self, **filters):
        req = {"cmd": "list", "limit": 1000000}
        req.update(filters)
        reply = self.ctl(req)
        assert reply.get("ok"), reply
        assert reply["truncated"] is False
        return {m["id"]: m for m in reply["messages"]}

    def queue(self, **filters):
        req = {"cmd": "queue"}
        req.update(filters)
        reply = self.ctl(req)
        assert reply.get("ok"), reply
        return reply

    def verify(self):
        reply = self.ctl({"cmd": "verify"})
        assert reply.get("ok"), reply
        return reply

    def assert_consistent(self):
        r = self.verify()
        assert r["violations"] == 0, "spool verify: %r" % r

    # -- volleyctl
    def volleyctl(self, *args, timeout=30, config=True):
        cmd = [str(VOLLEYCTL)]
        if config:
            cmd += ["-c", str(self.conf_path)]
        cmd += [str(a) for a in args]
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True,
                              timeout=timeout)

    # -- logs
    def log_records(self, path=None):
        path = Path(path) if path else self.log_path
        recs = []
        try:
            data = path.read_text(errors="replace")
        except FileNotFoundError:
            return recs
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                recs.append(json.loads(line))
            except ValueError:
                recs.append({"level": "unparsable", "line": line})
        return recs

    def log_errors(self):
        return [r for r in self.log_records() if r.get("level") in ("error", "unparsable")]

    # -- SMTP
    def connect(self, unix=False, timeout=10.0):
        if unix:
            return SMTPConn.unix(self.unix_socket, timeout)
        return SMTPConn.tcp(self.port, timeout)

    def session(self, unix=False, timeout=10.0, helo="client.test"):
        """A connection with the greeting read and EHLO done."""
        c = self.connect(unix, timeout)
        try:
            c.greeting()
            c.ehlo(helo)
        except Exception:
            c.close()
            raise
        return c

    def inject(self, sender, rcpts, body, unix=False, params=""):
        """One message in its own session; returns its id (asserting the 250)."""
        with self.session(unix) as c:
            r = c.send_message(sender, rcpts, body, params)
            msgid = queued_id(r)
            expect(c.cmd("QUIT"), "221 2.0.0")
        return msgid

    # -- spool snapshots
    def seed(self):
        """Queue a few known messages (one with a campaign, dot lines, 8-bit text) and
        return a snapshot of the whole spool for assert_intact."""
        bodies = [
            (b"s1@example.org", ["a@seed.example", "b@seed.example"],
             make_body("seed one", body_lines=[".leading dot", "..two", "plain"])),
            (b"", ["c@seed.example"], make_body("seed two", body_lines=["x" * 998])),
            (b"s3@example.org", ["d@seed.example"],
             make_body("seed three", extra_headers=["X-Volley-Campaign: seed-camp"],
                       body_lines=["caf\u00e9 8-bit \u2713"])),
        ]
        for sender, rcpts, body in bodies:
            self.inject(sender.decode(), rcpts, body, params="BODY=8BITMIME")
        return self.snapshot()

    def snapshot(self):
        """{id: (bytes, sender, campaign, [recipient addresses])} for every message."""
        snap = {}
        for msgid in self.list():
            s = self.show(msgid)
            snap[msgid] = (self.cat(msgid), s["sender"], s["campaign"],
                           [r["address"] for r in s["recipients"]])
        return snap

    def assert_intact(self, snap, allow_new=False):
        """Every message of snap is still there, byte-exact with the same envelope; no
        other message appeared (unless allow_new); verify finds nothing."""
        now = self.snapshot()
        for msgid, before in snap.items():
            assert msgid in now, "message %s disappeared from the spool" % msgid
            assert now[msgid] == before, "message %s changed: %r != %r" % (
                msgid, now[msgid][1:], before[1:])
        if not allow_new:
            extra = set(now) - set(snap)
            assert not extra, "unexpected messages stored: %s" % sorted(extra)
        self.assert_consistent()
        return now


def vm_rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise VolleyError("no VmRSS for pid %d" % pid)
