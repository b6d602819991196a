"""
mailnet - a small mail world on loopback for the delivery tests.

  DNSServer     dnsmasq on 127.0.0.1:<free UDP port> answering for *.test from records
                the test declares (host-record, mx-host); everything else under .test
                is NXDOMAIN.
  AioHost       an aiosmtpd mail host on 127.0.0.N:PORT in a thread of the test
                process.  Records every session and every accepted envelope (sender,
                MAIL/RCPT parameters, recipients, the exact bytes received, TLS, EHLO
                name); replies can be scripted per recipient and per attempt.
  ScriptedHost  a raw-socket mail host (threads) whose connections misbehave on
                purpose: drop the connection at a chosen stage, stall, or answer
                STARTTLS with garbage.  Connection i follows behaviours[i] (the last
                one repeats).
  SinkHost      Postfix smtp-sink with -c (running counters of sessions and messages).
  MailNet       all of the above for one test: one mail port shared by every host of
                the test, volleyd settings pointing at them, and teardown.

Only 127.0.0.x addresses are used.  Every wait is bounded.
"""

import asyncio
import json
import re
import signal
import socket
import struct
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

DNSMASQ = "/usr/sbin/dnsmasq"
SMTP_SINK = "/usr/sbin/smtp-sink"

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP as AioSMTP
    HAVE_AIOSMTPD = True
except ImportError:  # pragma: no cover - the delivery tests skip themselves
    Controller = AioSMTP = object
    HAVE_AIOSMTPD = False


def free_udp_port():
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                t.bind(("127.0.0.1", port))
            return port
        except OSError:
            continue
    raise RuntimeError("no free UDP+TCP port")


def free_mail_port(ips=("127.0.0.1",)):
    """A TCP port that is free on 127.0.0.1 (and, as far as a probe can tell, on ips)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        ok = True
        for ip in ips:
            try:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as p:
                    p.bind((ip, port))
            except OSError:
                ok = False
                break
        if ok:
            return port
    raise RuntimeError("no free port")


def wait_until(pred, timeout, what, interval=0.02):
    """Poll pred() until it returns something true; AssertionError after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise AssertionError("timed out after %.1f s waiting for %s" % (timeout, what))
        time.sleep(interval)


# --------------------------------------------------------------------------- DNS


def _dns_query_packet(name, qtype=1, qid=0x1234):
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)


class _PortTaken(Exception):
    pass


class DNSServer:
    """dnsmasq for one test.  Declare records, then start()."""

    def __init__(self, workdir, local=("test",)):
        """local: the zones it answers for alone (NXDOMAIN for names not declared;
        anything else is REFUSED, as it has no upstream)."""
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_udp_port()
        self.lines = ["local=/%s/" % z for z in local]
        self.proc = None

    def host(self, name, ip):
        self.lines.append("host-record=%s,%s" % (name, ip))

    def mx(self, domain, host, pref=10):
        self.lines.append("mx-host=%s,%s,%d" % (domain, host, pref))

    def null_mx(self, domain):
        self.lines.append("mx-host=%s,.,0" % domain)

    def txt(self, name, text):
        """A TXT record; text longer than 255 octets becomes several strings of one
        record (RFC 1035 character-strings), as a DNS operator would publish it."""
        chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
        quoted = ",".join('"%s"' % c.replace("\\", "\\\\").replace('"', '\\"')
                          for c in chunks)
        self.lines.append("txt-record=%s,%s" % (name, quoted))

    def ptr(self, ip, name):
        """A PTR record for an IPv4 address (host() adds one too, for its own name)."""
        rev = ".".join(reversed(ip.split("."))) + ".in-addr.arpa"
        self.lines.append("ptr-record=%s,%s" % (rev, name))

    @property
    def server(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10.0):
        # the port was free a moment ago; a client socket may take it meanwhile
        for attempt in range(5):
            try:
                return self._start(timeout)
            except _PortTaken:
                self.port = free_udp_port()
        return self._start(timeout)

    def _start(self, timeout):
        conf = self.dir / "dnsmasq.conf"
        conf.write_text("\n".join([
            "port=%d" % self.port,
            "listen-address=127.0.0.1",
            "bind-interfaces",
            "no-resolv",
            "no-hosts",
            "cache-size=0",
            "log-queries",
            "log-facility=%s" % (self.dir / "dnsmasq.log"),
        ] + self.lines) + "\n")
        out_path = self.dir / "dnsmasq.out"
        with open(out_path, "wb") as out:
            self.proc = subprocess.Popen(
                [DNSMASQ, "-C", str(conf), "--keep-in-foreground", "--user=root",
                 "--pid-file=%s" % (self.dir / "dnsmasq.pid")],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.1)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    text = out_path.read_text(errors="replace")
                    if "Address already in use" in text:
                        raise _PortTaken(text)
                    raise RuntimeError("dnsmasq exited with %s: %s" % (self.proc.returncode,
                                                                       text))
                try:
                    s.sendto(_dns_query_packet("ready.test"), ("127.0.0.1", self.port))
                    data, _ = s.recvfrom(4096)
                    if data[:2] == b"\x12\x34":
                        return self
                except OSError:
                    pass
                time.sleep(0.02)
        raise RuntimeError("dnsmasq did not answer within %.0f s" % timeout)

    def queries(self, name=None):
        """Names dnsmasq was asked about (from its query log)."""
        try:
            text = (self.dir / "dnsmasq.log").read_text(errors="replace")
        except FileNotFoundError:
            return []
        out = []
        for m in re.finditer(r"query\[(\w+)\] (\S+) from", text):
            if name is None or m.group(2) == name:
                out.append((m.group(1), m.group(2)))
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- aiosmtpd


class Envelope:
    """One transaction a mail host accepted (or saw the text of)."""

    def __init__(self, **kw):
        self.mail_from = kw.get("mail_from")
        self.mail_options = kw.get("mail_options", [])
        self.rcpt_tos = kw.get("rcpt_tos", [])
        self.rcpt_options = kw.get("rcpt_options", [])
        self.content = kw.get("content")
        self.tls = kw.get("tls", False)
        self.helo = kw.get("helo")
        self.session = kw.get("session")
        self.accepted = kw.get("accepted", True)
        self.peer = kw.get("peer")

    def __repr__(self):
        return "Envelope(from=%r, rcpts=%r, %d bytes, tls=%r, session=%r)" % (
            self.mail_from, self.rcpt_tos, len(self.content or b""), self.tls, self.session)


class RecordingHandler:
    """aiosmtpd handler: records sessions and envelopes, scripted replies.

    rcpt_script(address, n) -> reply line or None (accept); n counts the RCPTs for
    that address seen so far by this host, starting at 1.
    data_script(envelope, n) -> reply line or None (accept); n counts DATA texts.
    """

    def __init__(self, name, pipelining=True):
        self.name = name
        self.pipelining = pipelining
        self.lock = threading.Lock()
        self.sessions = 0
        self.active = 0
        self.max_active = 0
        self.envelopes = []
        self.rcpt_seen = Counter()
        self.rcpt_replies = []
        self.data_seen = 0
        self.mail_seen = 0
        self.rcpt_script = None
        self.data_script = None
        self.data_reply = "250 2.0.0 Ok: queued on %s" % name
        self.data_delay = 0.0  # seconds before the reply to the final dot
        self.inflight = Counter()      # texts being answered, by recipient domain
        self.max_inflight = Counter()  # the most at once, by recipient domain
        self.max_inflight_all = 0
        self.data_arrived = threading.Event()  # set when a text has been received

    # called by CountingSMTP
    def _connected(self, smtp):
        with self.lock:
            self.sessions += 1
            self.active += 1
            self.max_active = max(self.max_active, self.active)
            smtp.vt_id = self.sessions

    def _lost(self):
        with self.lock:
            self.active -= 1

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        if not getattr(self, "eightbitmime", True):  # a 7-bit host (RFC 6152 not offered)
            responses[:] = [r for r in responses if "8BITMIME" not in r]
        if self.pipelining:
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        with self.lock:
            self.mail_seen += 1
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 2.1.0 Ok"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        with self.lock:
            self.rcpt_seen[address] += 1
            n = self.rcpt_seen[address]
        reply = self.rcpt_script(address, n) if self.rcpt_script else None
        with self.lock:
            self.rcpt_replies.append((address, n, reply or "250 OK"))
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.data_seen += 1
            n = self.data_seen
        env = Envelope(mail_from=envelope.mail_from, mail_options=list(envelope.mail_options),
                       rcpt_tos=list(envelope.rcpt_tos), rcpt_options=list(envelope.rcpt_options),
                       content=bytes(envelope.original_content), tls=session.ssl is not None,
                       helo=session.host_name, session=getattr(server, "vt_id", None),
                       peer=session.peer[0] if session.peer else None)
        self.data_arrived.set()
        doms = {r.rpartition("@")[2].lower() for r in env.rcpt_tos}
        with self.lock:
            for d in doms:
                self.inflight[d] += 1
                self.max_inflight[d] = max(self.max_inflight[d], self.inflight[d])
            self.max_inflight_all = max(self.max_inflight_all, sum(self.inflight.values()))
        try:
            if self.data_delay:
                await asyncio.sleep(self.data_delay)
        finally:
            with self.lock:
                for d in doms:
                    self.inflight[d] -= 1
        reply = self.data_script(env, n) if self.data_script else None
        if reply and not reply.startswith("2"):
            env.accepted = False
        with self.lock:
            self.envelopes.append(env)
        return reply or self.data_reply

    def accepted(self):
        with self.lock:
            return [e for e in self.envelopes if e.accepted]

    def delivered_pairs(self):
        """[(content, rcpt)] of every accepted envelope, one per recipient."""
        return [(e.content, r) for e in self.accepted() for r in e.rcpt_tos]


class CountingSMTP(AioSMTP):
    """aiosmtpd's SMTP that tells the handler about each new connection (the second
    connection_made after STARTTLS is the same session)."""

    def connection_made(self, transport):
        first = self._original_transport is None and self.transport is None
        super().connection_made(transport)
        if first:
            self.event_handler._connected(self)

    def connection_lost(self, error):
        if self.transport is not None:
            self.event_handler._lost()
        super().connection_lost(error)


class CountingController(Controller):
    def factory(self):
        return CountingSMTP(self.handler, **self.SMTP_kwargs)


class AioHost:
    def __init__(self, ip, port, name, tls_context=None, pipelining=True, require_starttls=False,
                 **smtp_kwargs):
        """smtp_kwargs go to aiosmtpd's SMTP (data_size_limit, enable_SMTPUTF8, ...)."""
        self.ip = ip
        self.port = port
        self.name = name
        self.handler = RecordingHandler(name, pipelining=pipelining)
        kw = dict(smtp_kwargs)
        if tls_context is not None:
            kw["tls_context"] = tls_context
            kw["require_starttls"] = require_starttls
        self.controller = CountingController(self.handler, hostname=ip, port=port,
                                             server_hostname=name, ready_timeout=10, **kw)
        self.running = False
        self._probes = 0

    def start(self):
        self.controller.start()
        self.running = True
        # Controller.start() probes the port with a connection of its own
        with self.handler.lock:
            self._probes = self.handler.sessions
        return self

    def stop(self):
        if self.running:
            self.running = False
            self.controller.stop()

    # shortcuts
    @property
    def sessions(self):
        """SMTP connections made to this host (not counting the start-up probe)."""
        with self.handler.lock:
            return self.handler.sessions - self._probes

    @property
    def envelopes(self):
        return self.handler.accepted()


# --------------------------------------------------------------------------- raw host


class _LineConn:
    """CRLF lines over a raw server socket that polls (timeout 0.2 s) so the server
    can stop; buf[0] holds what arrived after the last line read."""

    def __init__(self, conn, stopping):
        self.conn = conn
        self.stopping = stopping
        self.buf = [b""]

    def send(self, line):
        self.conn.sendall(line.encode() + b"\r\n")

    def read_line(self):
        while b"\r\n" not in self.buf[0]:
            if self.stopping.is_set():
                raise ConnectionError("stopping")
            try:
                chunk = self.conn.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise ConnectionError("client closed")
            self.buf[0] += chunk
        line, self.buf[0] = self.buf[0].split(b"\r\n", 1)
        return line


class _RawHost:
    """What ScriptedHost and PolicingHost share: a listening socket on (ip, port)
    polled by an accept thread until stop(); each connection goes to _accepted(conn,
    peer), which serves it (on a thread of its own) or closes it."""

    def __init__(self, ip, port, name):
        self.ip, self.port, self.name = ip, port, name
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.conns = []  # to close at stop(), for hosts that hold connections open
        self.sock = None
        self.thread = None

    def start(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((self.ip, self.port))
        self.sock.listen(128)
        self.sock.settimeout(0.1)
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.stopping.set()
        if self.thread:
            self.thread.join(5)
        if self.sock:
            self.sock.close()
        with self.lock:
            conns = list(self.conns)
        for c in conns:
            try:
                c.close()
            except OSError:
                pass

    def _accept_loop(self):
        while not self.stopping.is_set():
            try:
                conn, peer = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._accepted(conn, peer)


class ScriptedHost(_RawHost):
    """A raw-socket SMTP server.  Behaviours (per connection, the last repeats):

      ok             a plain, correct server (PIPELINING, 8BITMIME, SIZE,
                     ENHANCEDSTATUSCODES); records accepted envelopes
      drop-banner    send the banner, close
      drop-ehlo      close when EHLO/HELO arrives (no reply)
      drop-mail      close when MAIL arrives
      drop-rcpt      close when the first RCPT arrives
      drop-data      answer DATA with 354, then close
      drop-dot       read the whole text, close before the final reply
      busy-banner    greet with "421 4.3.2 busy" and close
      stall-banner   accept, never send the banner
      stall-dot      read the whole text, never answer it
      tls-garbage    like ok but offers STARTTLS; answers it with 220 and then bytes
                     that are not TLS, and closes
      helo-only      like ok but refuses EHLO (502): the client must fall back to HELO
      bad-reply      answers MAIL with a line that is not an SMTP reply
      slow-banner    like ok, but greets after 0.5 s (lets a queue build up)
      drop-mail2     like slow-banner, but closes without a word when the second
                     MAIL of the session arrives

    after_dot counts final "." lines that arrived with the next command already
    behind them in the same read (the client pipelined past the end of data).
    """

    def __init__(self, ip, port, name, behaviours=("ok",)):
        super().__init__(ip, port, name)
        self.behaviours = list(behaviours)
        self.sessions = 0
        self.log = []          # (session, behaviour, event)
        self.envelopes = []    # accepted
        self.partial = []      # texts seen but not acknowledged (drop-dot, stall-dot)
        self.after_dot = 0

    def set_behaviours(self, behaviours):
        with self.lock:
            done = self.sessions
            self.behaviours = self.behaviours[:done] + list(behaviours)

    def _accepted(self, conn, peer):
        with self.lock:
            self.sessions += 1
            n = self.sessions
            b = self.behaviours[min(n - 1, len(self.behaviours) - 1)]
            self.conns.append(conn)
        threading.Thread(target=self._serve, args=(conn, n, b), daemon=True).start()

    def _event(self, n, b, what):
        with self.lock:
            self.log.append((n, b, what))

    def _serve(self, conn, n, behaviour):
        conn.settimeout(0.2)
        lc = _LineConn(conn, self.stopping)
        send, read_line, buf = lc.send, lc.read_line, lc.buf

        def hold():
            # keep the connection open, say nothing, until the client gives up
            while not self.stopping.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except socket.timeout:
                    continue
                except OSError:
                    return

        try:
            self._event(n, behaviour, "connect")
            if behaviour == "stall-banner":
                hold()
                self._event(n, behaviour, "client closed")
                return
            if behaviour == "busy-banner":
                send("421 4.3.2 %s busy, try later" % self.name)
                return
            if behaviour in ("slow-banner", "drop-mail2"):
                time.sleep(0.5)
            send("220 %s ESMTP scripted" % self.name)
            nmail = 0
            if behaviour == "drop-banner":
                return
            sender, rcpts, mail_opts = None, [], []
            while True:
                line = read_line()
                verb = line[:4].upper()
                self._event(n, behaviour, line.decode("utf-8", "replace"))
                if verb in (b"EHLO", b"HELO"):
                    if behaviour == "drop-ehlo":
                        return
                    if verb == b"EHLO" and behaviour == "helo-only":
                        send("502 5.5.2 Error: command not recognized")
                        continue
                    if verb == b"HELO":
                        send("250 %s" % self.name)
                        continue
                    ext = ["PIPELINING", "8BITMIME", "SIZE 10240000", "ENHANCEDSTATUSCODES"]
                    if behaviour == "tls-garbage":
                        ext.append("STARTTLS")
                    lines = [self.name] + ext
                    for i, l in enumerate(lines):
                        send("250%s%s" % ("-" if i < len(lines) - 1 else " ", l))
                elif line.upper() == b"STARTTLS":
                    if behaviour != "tls-garbage":
                        send("502 5.5.1 STARTTLS not offered")
                        continue
                    send("220 2.0.0 Ready to start TLS")
                    conn.sendall(b"this is certainly not a TLS server hello\r\n" * 4)
                    return
                elif verb == b"MAIL":
                    nmail += 1
                    if behaviour == "drop-mail" or (behaviour == "drop-mail2" and nmail == 2):
                        return
                    if behaviour == "bad-reply":
                        send("hello there, this is no reply")
                        continue
                    m = re.match(rb"MAIL FROM:<([^>]*)>(.*)", line, re.I)
                    sender = m.group(1).decode() if m else None
                    mail_opts = m.group(2).decode().split() if m else []
                    rcpts = []
                    send("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    if behaviour == "drop-rcpt":
                        return
                    m = re.match(rb"RCPT TO:<([^>]*)>", line, re.I)
                    rcpts.append(m.group(1).decode() if m else None)
                    send("250 2.1.5 Ok")
                elif verb == b"DATA":
                    if not rcpts:
                        send("503 5.5.1 no recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    if behaviour == "drop-data":
                        return
                    lines = []
                    while True:
                        l = read_line()
                        if l == b".":
                            if buf[0]:
                                with self.lock:
                                    self.after_dot += 1
                            break
                        lines.append(l[1:] if l.startswith(b".") else l)
                    content = b"".join(l + b"\r\n" for l in lines)
                    env = Envelope(mail_from=sender, mail_options=mail_opts, rcpt_tos=rcpts,
                                   content=content, session=n)
                    if behaviour in ("drop-dot", "stall-dot"):
                        env.accepted = False
                        with self.lock:
                            self.partial.append(env)
                        if behaviour == "stall-dot":
                            hold()
                            self._event(n, behaviour, "client closed")
                        return
                    with self.lock:
                        self.envelopes.append(env)
                    send("250 2.0.0 Ok: queued")
                    sender, rcpts = None, []
                elif verb == b"RSET":
                    sender, rcpts = None, []
                    send("250 2.0.0 Ok")
                elif verb == b"NOOP":
                    send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass


class PolicingHost(_RawHost):
    """A raw-socket SMTP server that polices its clients the way big receivers do,
    and records what it saw with times so a test can check limits on the receiving
    side.

      max_conns     connections beyond this many at once are greeted with
                    "421 4.7.0 Too many concurrent connections" and closed
                    (counted in refused); None = no limit
      mail_policy   callable(host, session, now) -> None (accept) or a reply line
                    for MAIL; a 4xx/5xx line starting "421" also closes the session

    Records: accepted [Accepted], sessions [dict(n, peer, helo, start, end, msgs)],
    mails (time of every MAIL command), max_active (most served connections at
    once), refused, policy_replies [(time, reply)].
    """

    class Accepted:
        def __init__(self, **kw):
            self.__dict__.update(kw)

        def __repr__(self):
            return "Accepted(%r)" % self.__dict__

    def __init__(self, ip, port, name, max_conns=None, mail_policy=None):
        super().__init__(ip, port, name)
        self.max_conns = max_conns
        self.mail_policy = mail_policy
        self.active = 0
        self.max_active = 0
        self.refused = 0
        self.nsessions = 0
        self.sessions = []
        self.accepted = []
        self.policy_replies = []
        self.mails = []

    def max_in_window(self, seconds):
        """The most messages accepted within any window of the given length."""
        with self.lock:
            ts = sorted(a.t for a in self.accepted)
        best, j = 0, 0
        for i, t in enumerate(ts):
            while ts[j] < t - seconds:
                j += 1
            best = max(best, i - j + 1)
        return best

    def _accepted(self, conn, peer):
        with self.lock:
            over = self.max_conns is not None and self.active >= self.max_conns
            if over:
                self.refused += 1
            else:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                self.nsessions += 1
                sess = {"n": self.nsessions, "peer": peer[0], "helo": None,
                        "start": time.monotonic(), "end": None, "msgs": 0}
                self.sessions.append(sess)
        if over:
            try:
                conn.sendall(b"421 4.7.0 Too many concurrent connections from this IP\r\n")
                conn.close()
            except OSError:
                pass
            return
        threading.Thread(target=self._serve, args=(conn, sess), daemon=True).start()

    def _end(self, sess):
        with self.lock:
            if sess["end"] is None:
                self.active -= 1
                sess["end"] = time.monotonic()

    def _serve(self, conn, sess):
        conn.settimeout(0.2)
        lc = _LineConn(conn, self.stopping)
        send, read_line = lc.send, lc.read_line

        try:
            send("220 %s ESMTP policing" % self.name)
            sender, rcpts = None, []
            while True:
                line = read_line()
                verb = line[:4].upper()
                if verb in (b"EHLO", b"HELO"):
                    sess["helo"] = line[5:].decode("utf-8", "replace").strip()
                    ext = [self.name, "PIPELINING", "8BITMIME", "SIZE 10240000",
                           "ENHANCEDSTATUSCODES"]
                    for i, l in enumerate(ext):
                        send("250%s%s" % ("-" if i < len(ext) - 1 else " ", l))
                elif verb == b"MAIL":
                    now = time.monotonic()
                    with self.lock:
                        self.mails.append(now)
                    reply = self.mail_policy(self, sess, now) if self.mail_policy else None
                    if reply:
                        with self.lock:
                            self.policy_replies.append((now, reply))
                        send(reply)
                        if reply.startswith("421"):
                            return
                        sender = None
                        continue
                    m = re.match(rb"MAIL FROM:<([^>]*)>", line, re.I)
                    sender, rcpts = (m.group(1).decode() if m else ""), []
                    send("250 2.1.0 Ok")
                elif verb == b"RCPT":
                    if sender is None:
                        send("503 5.5.1 need MAIL first")
                        continue
                    m = re.match(rb"RCPT TO:<([^>]*)>", line, re.I)
                    rcpts.append(m.group(1).decode() if m else None)
                    send("250 2.1.5 Ok")
                elif verb == b"DATA":
                    if sender is None or not rcpts:
                        send("503 5.5.1 no valid recipients")
                        continue
                    send("354 End data with <CR><LF>.<CR><LF>")
                    lines = []
                    while True:
                        l = read_line()
                        if l == b".":
                            break
                        lines.append(l[1:] if l.startswith(b".") else l)
                    content = b"".join(l + b"\r\n" for l in lines)
                    with self.lock:
                        sess["msgs"] += 1
                        self.accepted.append(PolicingHost.Accepted(
                            t=time.monotonic(), session=sess["n"], peer=sess["peer"],
                            helo=sess["helo"], sender=sender, rcpts=rcpts, content=content))
                    send("250 2.0.0 Ok: queued")
                    sender, rcpts = None, []
                elif verb == b"RSET":
                    sender, rcpts = None, []
                    send("250 2.0.0 Ok")
                elif verb == b"NOOP":
                    send("250 2.0.0 Ok")
                elif verb == b"QUIT":
                    # the session is over for counting before the client can see it
                    # is: a client that opens its next connection on our 221 is
                    # within its limit
                    self._end(sess)
                    send("221 2.0.0 Bye")
                    return
                else:
                    send("502 5.5.2 Error: command not recognized")
        except (ConnectionError, OSError):
            pass
        finally:
            self._end(sess)
            try:
                conn.close()
            except OSError:
                pass


# --------------------------------------------------------------------------- smtp-sink


class SinkHost:
    """Postfix smtp-sink on ip:port; counters from its -c output."""

    COUNTER_RE = re.compile(rb"sess=(\d+) quit=(\d+) mesg=(\d+)")

    def __init__(self, ip, port, workdir, extra_args=()):
        self.ip = ip
        self.port = port
        self.out = Path(workdir) / ("sink-%s.out" % ip)
        self.args = [SMTP_SINK, "-u", "nobody", "-c"] + list(extra_args) + [
            "%s:%d" % (ip, port), "256"]
        self.proc = None

    def start(self, timeout=10.0):
        self.out.parent.mkdir(parents=True, exist_ok=True)
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=f,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("smtp-sink exited: %s" % self.out.read_text(errors="replace"))
            try:
                # a probe with no SMTP at all: counted as a session, subtracted below
                with socket.create_connection((self.ip, self.port), timeout=1) as s:
                    s.recv(100)
                self.probes = 1
                return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("smtp-sink not listening after %.0f s" % timeout)

    def counters(self):
        """(sessions, messages) so far (without the start-up probe)."""
        data = self.out.read_bytes()
        m = None
        for m in self.COUNTER_RE.finditer(data):
            pass
        if not m:
            return 0, 0
        return int(m.group(1)) - self.probes, int(m.group(3))

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


# --------------------------------------------------------------------------- the net


class MailNet:
    """DNS, mail hosts and volleyd settings for one test."""

    def __init__(self, workdir):
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_mail_port(["127.0.0.%d" % i for i in range(2, 12)] + ["127.0.0.99"])
        self.dns = DNSServer(self.dir / "dns")
        self.hosts = []

    # -- DNS
    def start_dns(self, hosts=None, mx=None, null_mx=()):
        """hosts: {name: ip}; mx: [(domain, host, pref)]; null_mx: [domain]."""
        for name, ip in (hosts or {}).items():
            self.dns.host(name, ip)
        for domain, host, pref in (mx or []):
            self.dns.mx(domain, host, pref)
        for domain in null_mx:
            self.dns.null_mx(domain)
        self.dns.start()
        return self.dns

    # -- hosts
    def smtpd(self, ip, name=None, start=True, **kw):
        h = AioHost(ip, self.port, name or ip, **kw)
        self.hosts.append(h)
        return h.start() if start else h

    def scripted(self, ip, behaviours=("ok",), name=None):
        h = ScriptedHost(ip, self.port, name or ip, behaviours)
        self.hosts.append(h)
        return h.start()

    def policing(self, ip, name=None, **kw):
        h = PolicingHost(ip, self.port, name or ip, **kw)
        self.hosts.append(h)
        return h.start()

    def sink(self, ip, extra_args=()):
        h = SinkHost(ip, self.port, self.dir, extra_args)
        self.hosts.append(h)
        return h.start()

    # -- volleyd
    def settings(self, overrides=None):
        s = {
            "delivery.enabled": True,
            "dns.servers": [self.dns.server],
            "dns.timeout_ms": 500,
            "dns.tries": 2,
            "delivery.port": self.port,
            "delivery.tls": "off",
            "delivery.retry_schedule": "1s",
            "delivery.site_down_seconds": 1,
            "delivery.idle_timeout": 1,
            "delivery.timeout_connect": 5,
            "delivery.timeout_greeting": 10,
            "delivery.timeout_command": 10,
            "delivery.timeout_data_init": 10,
            "delivery.timeout_data_block": 10,
            "delivery.timeout_data_done": 10,
        }
        s.update(overrides or {})
        return s

    def close(self):
        for h in self.hosts:
            try:
                h.stop()
            except Exception:
                pass
        self.dns.stop()


# --------------------------------------------------------------------------- accounting


FINAL = ("delivered", "bounced", "expired")


def acct_path(volley):
    return Path(volley.settings["log.dir"]) / "accounting.log"


def acct_records(volley):
    try:
        text = acct_path(volley).read_text(errors="replace")
    except FileNotFoundError:
        return []
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"type": "unparsable", "line": line})
    return out


def _died(volley):
    d = volley.died()
    return (d + "\n") if d else ""


def wait_acct(volley, pred, count=1, timeout=10.0, what="accounting records"):
    """The accounting records matching pred once there are at least count of them."""
    deadline = time.monotonic() + timeout
    while True:
        recs = [r for r in acct_records(volley) if pred(r)]
        if len(recs) >= count:
            return recs
        if time.monotonic() >= deadline:
            raise AssertionError(
                "%stimed out after %.1f s waiting for %d %s, have %d; accounting:\n  %s\n"
                "volleyd.log tail:\n  %s" % (
                    _died(volley), timeout, count, what, len(recs),
                    "\n  ".join(json.dumps(r) for r in acct_records(volley)[-15:]),
                    "\n  ".join(json.dumps(r) for r in volley.log_records()[-15:])))
        time.sleep(0.05)


def wait_final(volley, pairs, timeout=10.0):
    """Wait until every (msgid, recipient) of pairs has a final record; returns
    {(msgid, recipient): [records, in order]} for those pairs."""
    pairs = set(pairs)

    def done():
        recs = acct_records(volley)
        seen = {(r.get("msgid"), r.get("recipient")) for r in recs if r.get("type") in FINAL}
        return pairs <= seen

    try:
        wait_until(done, timeout, "final outcomes")
    except AssertionError:
        recs = acct_records(volley)
        seen = {(r.get("msgid"), r.get("recipient")) for r in recs if r.get("type") in FINAL}
        missing = sorted(pairs - seen)
        raise AssertionError("%s%d of %d recipients have no final outcome after %.0f s, e.g. %s;"
                             " last accounting records:\n  %s\nvolleyd.log tail:\n  %s" % (
                                 _died(volley), len(missing), len(pairs), timeout, missing[:5],
                                 "\n  ".join(json.dumps(r) for r in recs[-10:]),
                                 "\n  ".join(json.dumps(r) for r in volley.log_records()[-10:])))
    out = {}
    for r in acct_records(volley):
        k = (r.get("msgid"), r.get("recipient"))
        if k in pairs:
            out.setdefault(k, []).append(r)
    return out


def make_tls_cert(workdir, cn):
    """A self-signed certificate and key for cn (openssl req -x509)."""
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    r = subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                        "-subj", "/CN=%s" % cn, "-days", "1", "-keyout", str(key),
                        "-out", str(cert)], capture_output=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return cert, key


# --------------------------------------------------------------------------- injection

ACCT_KEYS = {"ts", "type", "msgid", "campaign", "sender", "recipient", "domain", "site", "mx",
             "ip", "source", "vmta", "pool", "tls", "cipher", "code", "enh", "diag", "attempt",
             "queue_s"}


def inject_many(volley, messages, sessions=1):
    """Inject [(sender, [rcpts], body)] over `sessions` parallel SMTP sessions (each
    carrying many transactions).  Returns the message ids in the order given."""
    from volley_harness import queued_id  # noqa: the harness imports nothing from here
    ids = [None] * len(messages)
    errors = []

    def worker(k):
        try:
            with volley.session() as c:
                for i in range(k, len(messages), sessions):
                    sender, rcpts, body = messages[i]
                    ids[i] = queued_id(c.send_message(sender, rcpts, body, "BODY=8BITMIME"))
                c.cmd("QUIT")
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert all(ids), "some messages were not injected"
    return ids


def message_id_header(content):
    """The Message-ID header value of a received message (bytes), or None."""
    m = re.search(rb"^Message-ID:\s*(\S+)\r$", content, re.M | re.I)
    return m.group(1).decode() if m else None
