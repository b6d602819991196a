"""
test_dkim_verify - messages signed by tools/dkim-sign verify with independent
verifiers: dkimpy (python3-dkim) always, OpenDKIM (opendkim-testmsg and
opendkim-testkey, from opendkim-tools) when it is installed.

Keys are generated per session with `openssl genpkey` (RSA 1024/2048/4096 and
Ed25519) into a temporary directory.  The public key record comes from
`dkim-sign --dns-record`; dkimpy gets it through its dnsfunc hook.  OpenDKIM
looks keys up in DNS, so its checks run in a private user, network and mount
namespace (unshare -rnm) where a dnsmasq on 127.0.0.1:53 serves the records and
/etc/resolv.conf is bind-mounted to point at it; nothing outside changes.
opendkim-testkey resolves through libunbound, which ignores resolv.conf, so it
gets its own opendkim.conf and unbound.conf (see the opendkim_ns fixture).  When
that cannot be set up the OpenDKIM checks are skipped with the reason.
"""

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from volley_harness import BUILD

dkim = pytest.importorskip("dkim")

DKIM_SIGN = BUILD / "dkim-sign"
DOMAIN = "example.test"
KEYS = [("rsa", 1024), ("rsa", 2048), ("rsa", 4096), ("ed25519", 256)]
CANONS = [(False, False), (True, True), (True, False), (False, True)]

HDR = (
    b"From: Alice Example <alice@example.test>\r\n"
    b"To: bob@example.net\r\n"
    b"Subject: plain message\r\n"
    b"Date: Mon, 23 Nov 2026 14:15:00 +0000\r\n"
    b"Message-ID: <plain.1@example.test>\r\n"
    b"MIME-Version: 1.0\r\n"
)

MESSAGES = {
    "plain": HDR + b"Content-Type: text/plain\r\n\r\nHello Bob,\r\n\r\nsee you.\r\n",
    "long_folded_headers": (
        b"From: Alice <alice@example.test>\r\n"
        b"To: a@example.net, b@example.net, c@example.net, d@example.net,\r\n"
        b"\te@example.net, f@example.net\r\n"
        b"Subject: " + b"very long subject " * 12 + b"\r\n"
        b"  continued   with\tmixed   whitespace  \r\n"
        b"List-Unsubscribe: <https://example.test/u/" + b"x" * 120 + b">,\r\n"
        b" <mailto:unsub@example.test>\r\n"
        b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        b"Reply-To: r@example.test\r\n"
        b"Date: Mon, 23 Nov 2026 14:15:00 +0000\r\n"
        b"\r\n"
        b"body with  double  spaces \t and tabs\t\r\n"
    ),
    "eight_bit": HDR + b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\n"
    + "Grüße aus Köln – ½ € ✓\r\n".encode("utf-8")
    + b"\xff\xfe raw octets\r\n",
    "empty_body": HDR + b"\r\n",
    "no_body_at_all": HDR,
    "trailing_blank_lines": HDR + b"\r\nlast line\r\n\r\n\r\n \r\n\r\n",
    "dot_leading_lines": HDR + b"\r\n.\r\n..two dots\r\n.leading dot\r\nend\r\n",
    "crlf_only_body": HDR + b"\r\n\r\n\r\n",
    "two_from": HDR + b"From: second@example.test\r\n\r\nx\r\n",
}


@pytest.fixture(scope="session")
def keys():
    if not DKIM_SIGN.exists():
        pytest.skip("%s not built (VOLLEY_BUILD=%s)" % (DKIM_SIGN, BUILD))
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not found")
    d = Path(tempfile.mkdtemp(prefix="dkimtest."))
    out = {}
    for alg, bits in KEYS:
        path = d / ("%s%d.pem" % (alg, bits))
        cmd = ["openssl", "genpkey", "-algorithm", alg.upper(), "-out", str(path)]
        if alg == "rsa":
            cmd[4:4] = ["-pkeyopt", "rsa_keygen_bits:%d" % bits]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        os.chmod(path, 0o600)
        sel = "%s%d" % (alg, bits)
        rec = subprocess.run(
            [str(DKIM_SIGN), "--dns-record", str(path), DOMAIN, sel],
            check=True, capture_output=True, timeout=30,
        ).stdout.strip()
        out[(alg, bits)] = {"path": path, "sel": sel, "record": rec}
    yield out
    shutil.rmtree(d, ignore_errors=True)


def sign(key, msg, simple_header=False, simple_body=False):
    cmd = [str(DKIM_SIGN), str(key["path"]), DOMAIN, key["sel"]]
    if simple_header:
        cmd.append("--simple-header")
    if simple_body:
        cmd.append("--simple-body")
    r = subprocess.run(cmd, input=msg, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr.decode()
    signed = r.stdout
    assert signed.endswith(msg) and signed.startswith(b"DKIM-Signature: ")
    return signed


def dnsfunc_for(keys):
    records = {("%s._domainkey.%s." % (k["sel"], DOMAIN)).encode(): k["record"] for k in keys.values()}

    def dnsfunc(name, timeout=5):
        if isinstance(name, str):
            name = name.encode()
        if not name.endswith(b"."):
            name += b"."
        return records.get(name)

    return dnsfunc


def test_dns_record_and_check(keys):
    for (alg, bits), k in keys.items():
        rec = k["record"].decode()
        assert rec.startswith("v=DKIM1; k=%s; p=" % ("ed25519" if alg == "ed25519" else "rsa"))
        r = subprocess.run([str(DKIM_SIGN), "--check-record", str(k["path"]), DOMAIN, k["sel"], rec],
                           capture_output=True, timeout=30)
        assert r.returncode == 0, r.stdout


@pytest.mark.parametrize("alg,bits", KEYS)
@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_dkimpy_verifies(keys, alg, bits, name):
    dnsfunc = dnsfunc_for(keys)
    for sh, sb in CANONS:
        signed = sign(keys[(alg, bits)], MESSAGES[name], sh, sb)
        assert b" l=" not in signed.split(b"\r\n\r\n")[0].split(b"From:")[0]
        ok = dkim.verify(signed, dnsfunc=dnsfunc, minkey=1024)
        assert ok, "dkimpy rejects %s %s%d simple-header=%s simple-body=%s:\n%s" % (
            name, alg, bits, sh, sb, signed[:1500].decode("latin-1"))


@pytest.mark.parametrize("alg,bits", [("rsa", 2048), ("ed25519", 256)])
def test_dkimpy_rejects_altered(keys, alg, bits):
    dnsfunc = dnsfunc_for(keys)
    for sh, sb in CANONS:
        signed = sign(keys[(alg, bits)], MESSAGES["plain"], sh, sb)
        assert dkim.verify(signed, dnsfunc=dnsfunc)
        assert not dkim.verify(signed.replace(b"see you.", b"see you!"), dnsfunc=dnsfunc)
        assert not dkim.verify(signed.replace(b"plain message", b"plain massage"), dnsfunc=dnsfunc)
        # a From added below is caught by the oversigned From
        hdr_end = signed.index(b"\r\n\r\n")
        added = signed[:hdr_end] + b"\r\nFrom: mallory@example.test" + signed[hdr_end:]
        assert not dkim.verify(added, dnsfunc=dnsfunc)


# ----------------------------------------------------------------------- OpenDKIM

def _split_txt(rec):
    """dnsmasq --txt-record value: the record as 255-octet quoted strings."""
    s = rec.decode()
    return ",".join('"%s"' % s[i:i + 255] for i in range(0, len(s), 255))


@pytest.fixture(scope="session")
def opendkim_ns(keys):
    """A shell-script runner inside a private namespace with DNS for the keys."""
    testmsg = shutil.which("opendkim-testmsg") or "/usr/sbin/opendkim-testmsg"
    testkey = shutil.which("opendkim-testkey") or "/usr/sbin/opendkim-testkey"
    if not os.path.exists(testmsg):
        pytest.skip("opendkim-testmsg not installed (apt-get install opendkim-tools)")
    dnsmasq = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not (shutil.which("unshare") and os.path.exists(dnsmasq) and shutil.which("ip")):
        pytest.skip("OpenDKIM checks need unshare, ip and dnsmasq to serve the key records")
    d = Path(tempfile.mkdtemp(prefix="dkimns."))
    (d / "resolv.conf").write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:2\n")
    # a dnsmasq config file, where quoted strings keep their spaces; in a user
    # namespace only uid/gid 0 exist, hence user root and no group change
    conf = ["no-resolv", "no-hosts", "listen-address=127.0.0.1", "bind-interfaces", "port=53",
            "user=root", "group=", "pid-file=%s" % (d / "dnsmasq.pid"),
            # the domain is ours: other names in it are NXDOMAIN, not REFUSED
            # for want of an upstream (which libunbound turns into SERVFAIL)
            "local=/%s/" % DOMAIN]
    for k in keys.values():
        conf.append("txt-record=%s._domainkey.%s,%s" % (k["sel"], DOMAIN, _split_txt(k["record"])))
    (d / "dnsmasq.conf").write_text("\n".join(conf) + "\n")
    # opendkim-testkey resolves through libunbound, which neither reads
    # resolv.conf (opendkim never calls ub_ctx_resolvconf) nor reaches a server
    # here: without a forwarder it recurses from the root hints, which this
    # namespace cannot reach, and before that it answers every *.test name
    # NXDOMAIN itself from its built-in RFC 6761 local-zone "test." ("record not
    # found", without a single packet sent).  So testkey gets -x with an
    # opendkim.conf whose ResolverConfiguration (an unbound.conf) lifts that
    # zone and forwards everything to the dnsmasq.  do-not-query-localhost is
    # already "no" in libunbound's defaults; it is spelled out because a "yes"
    # there would silently drop every query to 127.0.0.1.  No TrustAnchorFile:
    # the records are unsigned, testkey says "key not secure" and goes on.
    # -x also keeps an installed /etc/opendkim.conf (testkey's default) out.
    (d / "unbound.conf").write_text(
        "server:\n    do-not-query-localhost: no\n    local-zone: \"test.\" nodefault\n"
        "forward-zone:\n    name: \".\"\n    forward-addr: 127.0.0.1\n")
    (d / "opendkim.conf").write_text("ResolverConfiguration %s\n" % (d / "unbound.conf"))
    ns = ["unshare", "-n", "-m"] if os.geteuid() == 0 else ["unshare", "-r", "-n", "-m"]
    probe = subprocess.run(ns + ["sh", "-c",
                            "ip link set lo up && mount --bind %s /etc/resolv.conf" % (d / "resolv.conf")],
                           capture_output=True, timeout=30)
    if probe.returncode != 0:
        shutil.rmtree(d, ignore_errors=True)
        pytest.skip("cannot make a private namespace for OpenDKIM's DNS: %s" % probe.stderr.decode().strip())

    def run(script, stdin=None):
        full = (
            "set -e\nip link set lo up\nmount --bind %s /etc/resolv.conf\n"
            "%s --conf-file=%s 2>%s\n"
            "trap 'kill $(cat %s) 2>/dev/null || true' EXIT\n"
            "sleep 0.3\n%s\n"
        ) % (d / "resolv.conf", dnsmasq, d / "dnsmasq.conf", d / "dnsmasq.log", d / "dnsmasq.pid", script)
        return subprocess.run(ns + ["sh", "-c", full], input=stdin,
                              capture_output=True, timeout=120)

    # self-checks: OpenDKIM must handle its own output and find a record we serve,
    # or failures would say nothing about our signatures
    k = keys[("rsa", 2048)]
    # libopendkim's parser refuses a message without Date and To ("dkim_chunk():
    # Syntax error"), so the self-check message carries them
    own = run("printf 'From: a@%s\\nTo: b@%s\\nDate: Thu, 03 Dec 2026 07:00:00 +0000\\n"
              "Subject: s\\n\\nhi\\n' | %s -d %s -s %s -k %s | %s"
              % (DOMAIN, DOMAIN, testmsg, DOMAIN, k["sel"], k["path"], testmsg))
    testmsg_ok = own.returncode == 0 and own.stderr == b""
    why_msg = "opendkim-testmsg cannot sign and verify its own message here: %s" % (
        own.stderr.decode().strip() or "rc=%d" % own.returncode)
    testkey = "%s -x %s" % (testkey, d / "opendkim.conf")
    probe_key = run("%s -d %s -s %s" % (testkey, DOMAIN, k["sel"]))
    testkey_ok = probe_key.returncode == 0
    why_key = "opendkim-testkey does not see the namespace's DNS (it resolves through libunbound): %s" % (
        (probe_key.stdout + probe_key.stderr).decode().strip().splitlines() or ["rc=%d" % probe_key.returncode])[-1]
    yield {"run": run, "testmsg": testmsg, "testkey": testkey, "dir": d,
           "testmsg_ok": testmsg_ok, "why_msg": why_msg, "testkey_ok": testkey_ok, "why_key": why_key}
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("alg,bits", KEYS)
def test_opendkim_testkey(keys, opendkim_ns, alg, bits):
    if not opendkim_ns["testkey_ok"]:
        pytest.skip(opendkim_ns["why_key"])
    k = keys[(alg, bits)]
    r = opendkim_ns["run"]("%s -v -v -d %s -s %s -k %s" % (opendkim_ns["testkey"], DOMAIN, k["sel"], k["path"]))
    out = (r.stdout + r.stderr).decode()
    # opendkim-tools 2.11.0~beta2 (Debian 12) finds and parses the k=ed25519
    # record, then compares keys only as RSA ("EVP_PKEY_get1_RSA() failed ...
    # expecting an rsa key"); not the selector name, which also says ed25519
    if alg == "ed25519" and r.returncode != 0 and "EVP_PKEY_get1_RSA" in out:
        assert "record not found" not in out, out
        pytest.skip("this opendkim-testkey compares only RSA keys: %s" % out.strip().splitlines()[-1])
    assert r.returncode == 0, out
    assert "key OK" in out or "key not secure" in out, out
    assert "do not match" not in out, out


def test_opendkim_testkey_rejects_wrong_key(keys, opendkim_ns):
    # the passes above mean something only if testkey really compares: the
    # rsa1024 private key against the rsa2048 record must be a mismatch, and a
    # selector nobody serves must not be found
    if not opendkim_ns["testkey_ok"]:
        pytest.skip(opendkim_ns["why_key"])
    r = opendkim_ns["run"]("%s -v -v -d %s -s %s -k %s" % (
        opendkim_ns["testkey"], DOMAIN, keys[("rsa", 2048)]["sel"], keys[("rsa", 1024)]["path"]))
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0 and "keys do not match" in out, "rc=%d %s" % (r.returncode, out)
    r = opendkim_ns["run"]("%s -v -v -d %s -s nosuch" % (opendkim_ns["testkey"], DOMAIN))
    out = (r.stdout + r.stderr).decode()
    assert r.returncode != 0 and "record not found" in out, "rc=%d %s" % (r.returncode, out)


@pytest.mark.parametrize("alg,bits", KEYS)
# not "two_from": libopendkim refuses a message with two From fields before any
# signature is looked at (RFC 5322 3.6 allows one), which dkimpy checks instead
@pytest.mark.parametrize("name", ["plain", "long_folded_headers", "eight_bit", "empty_body",
                                  "trailing_blank_lines", "dot_leading_lines"])
def test_opendkim_testmsg_verifies(keys, opendkim_ns, alg, bits, name):
    if not opendkim_ns["testmsg_ok"]:
        pytest.skip(opendkim_ns["why_msg"])
    for sh, sb in CANONS:
        signed = sign(keys[(alg, bits)], MESSAGES[name], sh, sb)
        r = opendkim_ns["run"](opendkim_ns["testmsg"], stdin=signed)
        assert r.returncode == 0 and r.stdout == b"" and r.stderr == b"", (
            "opendkim-testmsg rejects %s %s%d simple-header=%s simple-body=%s: rc=%d %s %s" % (
                name, alg, bits, sh, sb, r.returncode, r.stdout.decode(), r.stderr.decode()))


def test_opendkim_testmsg_rejects_altered(keys, opendkim_ns):
    if not opendkim_ns["testmsg_ok"]:
        pytest.skip(opendkim_ns["why_msg"])
    signed = sign(keys[("rsa", 2048)], MESSAGES["plain"])
    r = opendkim_ns["run"](opendkim_ns["testmsg"], stdin=signed.replace(b"see you.", b"see you!"))
    assert r.returncode != 0 or r.stderr != b"", "opendkim-testmsg accepted an altered body"
