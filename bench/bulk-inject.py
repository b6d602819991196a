#!/usr/bin/python3
"""bulk-inject.py HOST:PORT MESSAGES RCPTS_PER_MESSAGE DOMAIN[,DOMAIN...]

Injects MESSAGES messages of about 2 KB with RCPTS_PER_MESSAGE recipients each,
spread over the domains, over 4 parallel SMTP sessions, pipelining MAIL, every
RCPT and DATA in one write (the server must offer PIPELINING).  Prints
"messages=N recipients=N secs=S".  For filling a queue fast (bench/queue1m.sh).
"""
import socket
import sys
import threading
import time


def reply(f):
    while True:
        line = f.readline()
        if not line:
            raise RuntimeError("connection closed")
        if line[3:4] != b"-":
            return int(line[:3])


def session(host, port, first, count, nrcpt, domains, errors):
    s = socket.create_connection((host, port), timeout=60)
    f = s.makefile("rb")
    reply(f)
    s.sendall(b"EHLO bulk.bench\r\n")
    reply(f)
    body = b"From: <bulk@sender.example>\r\nSubject: queue fill\r\n\r\n" + b"x" * 76 + b"\r\n"
    body = body + (b"y" * 76 + b"\r\n") * 24
    for m in range(first, first + count):
        cmds = [b"MAIL FROM:<bulk@sender.example>\r\n"]
        for r in range(nrcpt):
            d = domains[(m + r) % len(domains)]
            cmds.append(b"RCPT TO:<u%d.%d@%s>\r\n" % (m, r, d.encode()))
        cmds.append(b"DATA\r\n")
        s.sendall(b"".join(cmds))
        codes = [reply(f) for _ in range(nrcpt + 2)]
        if codes[-1] != 354:
            errors.append(codes)
            return
        s.sendall(body + b".\r\n")
        code = reply(f)
        if code != 250:
            errors.append("DATA refused: %d" % code)
            return
    s.sendall(b"QUIT\r\n")
    s.close()


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    msgs, nrcpt = int(sys.argv[2]), int(sys.argv[3])
    domains = sys.argv[4].split(",")
    sessions, errors, threads = 4, [], []
    per = msgs // sessions
    t0 = time.time()
    for i in range(sessions):
        n = per if i < sessions - 1 else msgs - per * (sessions - 1)
        t = threading.Thread(target=session,
                             args=(host, int(port), i * per, n, nrcpt, domains, errors))
        t.start()
        threads.append(t)
    for t in threads:
        t.join()
    if errors:
        print("errors:", errors[:3], file=sys.stderr)
        return 1
    print("messages=%d recipients=%d secs=%.1f" % (msgs, msgs * nrcpt, time.time() - t0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
