#!/usr/bin/python3
"""inject-sample.py - inject a sample batch into volleyd over SMTP.

usage: inject-sample.py (--socket PATH | --tcp HOST:PORT) [--messages N]
                        [--campaign ID]

Sends N messages (default 40) with 1-3 recipients each, spread over a handful of
example domains, tagged with X-Volley-Campaign, several per SMTP session, and
prints one line per reply class.  Exit 1 if any message was refused.
"""
import argparse
import smtplib
import socket
import sys

DOMAINS = ["gmail.example", "yahoo.example", "outlook.example", "corp.example",
           "small.example"]


class UnixSMTP(smtplib.SMTP):
    """smtplib over a unix stream socket (the injection socket)."""

    def __init__(self, path):
        self._path = path
        super().__init__()

    def connect(self, host="localhost", port=0, source_address=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self._path)
        self.file = None
        code, msg = self.getreply()
        return code, msg


def session(args):
    if args.socket:
        s = UnixSMTP(args.socket)
        s.connect()
    else:
        host, port = args.tcp.rsplit(":", 1)
        s = smtplib.SMTP(host, int(port), timeout=30)
    s.ehlo("demo.client.example")
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket")
    ap.add_argument("--tcp")
    ap.add_argument("--messages", type=int, default=40)
    ap.add_argument("--campaign", default="demo")
    ap.add_argument("--per-session", type=int, default=10)
    ap.add_argument("--domains", default=",".join(DOMAINS),
                    help="comma-separated recipient domains")
    args = ap.parse_args()
    if bool(args.socket) == bool(args.tcp):
        ap.error("give exactly one of --socket and --tcp")

    queued, refused = [], 0
    s = None
    for i in range(args.messages):
        if s is None or i % args.per_session == 0:
            if s is not None:
                s.quit()
            s = session(args)
        domains = args.domains.split(",")
        rcpts = [f"user{i}.{k}@{domains[(i + k) % len(domains)]}"
                 for k in range(1 + i % 3)]
        body = (f"From: News <news@sender.example>\r\n"
                f"To: {rcpts[0]}\r\n"
                f"Subject: Sample {i}\r\n"
                f"X-Volley-Campaign: {args.campaign}\r\n"
                f"\r\n"
                f"Hello, this is sample message {i}.\r\n"
                f".A line that starts with a dot survives.\r\n")
        try:
            s.mail("news@sender.example")
            for r in rcpts:
                s.rcpt(r)
            code, reply = s.data(body.encode())
            queued.append(reply.decode().rsplit(" ", 1)[-1])
        except smtplib.SMTPException as e:
            print(f"message {i}: refused: {e}", file=sys.stderr)
            refused += 1
            s = None
    if s is not None:
        s.quit()
    print(f"injected {len(queued)} messages ({refused} refused); "
          f"first id {queued[0] if queued else '-'}")
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
