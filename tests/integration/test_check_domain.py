"""volleyctl check-domain against a dnsmasq zone (mailnet.DNSServer): a sending
domain set up right (every check passes, also from the config alone), and domains
set up wrong in one way each (wrong DKIM key, SPF not authorising the source, SPF
over the 10-lookup limit, no DMARC, PTR not forward-confirmed, bounce domain
without MX).  No daemon runs: the command is offline, DNS only."""

import base64
import json
import os
import subprocess
from pathlib import Path

import pytest

from mailnet import DNSMASQ, DNSServer
from volley_harness import VOLLEYCTL, render_config

pytestmark = pytest.mark.needs_volleyctl


def _openssl_key(path):
    """A 2048-bit RSA private key at path; its DKIM p= value (base64 SPKI DER)."""
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt",
                    "rsa_keygen_bits:2048", "-out", str(path)], check=True,
                   capture_output=True, timeout=60)
    der = subprocess.run(["openssl", "pkey", "-in", str(path), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True, timeout=60).stdout
    return base64.b64encode(der).decode()


@pytest.fixture(scope="module")
def zone(tmp_path_factory):
    """One dnsmasq for every test here, with a good domain and the broken ones."""
    if not os.access(DNSMASQ, os.X_OK):
        pytest.skip("dnsmasq not installed")
    d = tmp_path_factory.mktemp("check_domain")
    key1, key2 = d / "key1.pem", d / "key2.pem"
    pub1, pub2 = _openssl_key(key1), _openssl_key(key2)
    # co.uk answered here too (NXDOMAIN but for what is declared): the
    # organizational-domain test below needs a public suffix of two labels
    dns = DNSServer(d / "dns", local=("test", "co.uk"))

    # send.test: everything right.  The DKIM record (> 255 octets) goes out as
    # several strings of one TXT record.
    dns.txt("sel1._domainkey.send.test", "v=DKIM1; k=rsa; p=" + pub1)
    dns.txt("send.test", "v=spf1 ip4:127.0.0.50 include:_spf.other.test -all")
    dns.txt("send.test", "google-site-verification=not-spf")
    dns.txt("_spf.other.test", "v=spf1 ip4:127.0.0.51 -all")
    dns.txt("_dmarc.send.test", "v=DMARC1; p=reject; rua=mailto:dmarc@send.test")
    dns.host("mta1.send.test", "127.0.0.50")  # A, and the PTR back
    dns.host("mta2.send.test", "127.0.0.51")
    dns.mx("bounces.send.test", "mx.bounces.send.test")
    dns.host("mx.bounces.send.test", "127.0.0.70")

    # fail.test: wrong key, SPF without the source, no DMARC, PTR that does not
    # come back, bounce domain without MX or address
    dns.txt("sel1._domainkey.fail.test", "v=DKIM1; k=rsa; p=" + pub2)
    dns.txt("fail.test", "v=spf1 ip4:127.0.0.99 -all")
    dns.ptr("127.0.0.60", "mta3.fail.test")
    dns.host("mta3.fail.test", "127.0.0.61")

    # many.test: 11 DNS-querying mechanisms
    dns.txt("many.test", "v=spf1 " + " ".join("a:h%d.many.test" % i for i in range(1, 12)) +
            " -all")
    for i in range(1, 12):
        dns.host("h%d.many.test" % i, "127.0.1.%d" % i)
    dns.txt("_dmarc.many.test", "v=DMARC1; p=none")

    # example.co.uk: a DMARC record for the organizational domain only
    dns.txt("_dmarc.example.co.uk", "v=DMARC1; p=reject; sp=quarantine; rua=mailto:d@example.co.uk")
    dns.start()
    yield {"dns": dns, "dir": d, "key1": key1, "key2": key2}
    dns.stop()


def _conf(zone, name, **settings):
    s = {"dns.servers": [zone["dns"].server], "dns.timeout_ms": 1000, "dns.tries": 1}
    s.update({k.replace("__", "."): v for k, v in settings.items()})
    p = zone["dir"] / (name + ".conf")
    p.write_text(render_config(s))
    return p


def _run(conf, *args):
    return subprocess.run([str(VOLLEYCTL), "-c", str(conf), "check-domain"] + [str(a) for a in args],
                          stdin=subprocess.DEVNULL, capture_output=True, timeout=120)


def _checks(r):
    out = json.loads(r.stdout)
    return out, {(c["check"], c["subject"]): c for c in out["checks"]}


def test_passing_domain(zone):
    conf = _conf(zone, "pass", feedback__bounce_domain="bounces.send.test",
                 delivery__helo_name="mta1.send.test")
    r = _run(conf, "send.test", "--source", "127.0.0.50", "--selector", "sel1",
             "--dkim-key", zone["key1"], "--json")
    assert r.returncode == 0, (r.stdout, r.stderr)
    out, c = _checks(r)
    assert out["domain"] == "send.test"
    assert c[("dkim", "sel1")]["result"] == "pass"
    spf = c[("spf", "127.0.0.50")]
    assert spf["result"] == "pass" and "ip4:127.0.0.50" in spf["detail"], spf
    dmarc = c[("dmarc", "send.test")]
    assert dmarc["result"] == "pass" and "p=reject" in dmarc["detail"], dmarc
    assert "rua=yes" in dmarc["detail"]
    ptr = c[("ptr", "127.0.0.50")]
    assert ptr["result"] == "pass" and "mta1.send.test" in ptr["detail"], ptr
    bounce = c[("bounce", "bounces.send.test")]
    assert bounce["result"] == "pass" and "mx.bounces.send.test" in bounce["detail"], bounce


def test_passing_domain_from_config(zone):
    """No options: selector and key from dkim.keys, source from
    delivery.source_address, EHLO from delivery.helo_name; the table output."""
    conf = _conf(zone, "fromconf", feedback__bounce_domain="bounces.send.test",
                 delivery__helo_name="mta1.send.test", delivery__source_address="127.0.0.50",
                 dkim__keys=["send.test:sel1:%s" % zone["key1"]])
    r = _run(conf, "send.test")
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = r.stdout.decode().splitlines()
    assert lines[0].split() == ["CHECK", "SUBJECT", "RESULT", "DETAIL"]
    rows = {tuple(l.split()[:2]): l.split()[2] for l in lines[1:]}
    assert rows == {("dkim", "sel1"): "pass", ("spf", "127.0.0.50"): "pass",
                    ("dmarc", "send.test"): "pass", ("ptr", "127.0.0.50"): "pass",
                    ("bounce", "bounces.send.test"): "pass"}, r.stdout
    # the columns line up
    assert len({l.index(" pass ") for l in lines[1:]}) == 1


def test_spf_include_passes(zone):
    conf = _conf(zone, "incl")
    r = _run(conf, "send.test", "--source", "127.0.0.51", "--json")
    _, c = _checks(r)
    spf = c[("spf", "127.0.0.51")]
    assert spf["result"] == "pass", spf
    assert "include:_spf.other.test" in spf["detail"] and "127.0.0.51" in spf["detail"]
    # no selector and no dkim.keys: skipped, not failed; no bounce domain: skipped
    assert c[("dkim", "send.test")]["result"] == "skip"
    assert c[("bounce", "send.test")]["detail"] == "no bounce domain configured"


def test_failing_domain(zone):
    conf = _conf(zone, "fail", feedback__bounce_domain="nomx.fail.test",
                 delivery__helo_name="mta3.fail.test")
    r = _run(conf, "fail.test", "--source", "127.0.0.60", "--selector", "sel1",
             "--dkim-key", zone["key1"], "--json")
    assert r.returncode == 1, (r.stdout, r.stderr)
    _, c = _checks(r)
    dkim = c[("dkim", "sel1")]
    assert dkim["result"] == "fail" and "does not match" in dkim["detail"], dkim
    spf = c[("spf", "127.0.0.60")]
    assert spf["result"] == "fail" and spf["detail"].startswith("fail:"), spf
    assert "-all" in spf["detail"]
    dmarc = c[("dmarc", "fail.test")]
    assert dmarc["result"] == "fail" and dmarc["detail"] == "no DMARC record", dmarc
    ptr = c[("ptr", "127.0.0.60")]
    assert ptr["result"] == "fail" and "does not resolve back" in ptr["detail"], ptr
    bounce = c[("bounce", "nomx.fail.test")]
    assert bounce["result"] == "fail" and "no MX" in bounce["detail"], bounce


def test_spf_lookup_limit(zone):
    conf = _conf(zone, "many")
    r = _run(conf, "many.test", "--source", "127.0.1.11", "--json")
    assert r.returncode == 1
    _, c = _checks(r)
    spf = c[("spf", "127.0.1.11")]
    assert spf["result"] == "fail" and spf["detail"].startswith("permerror"), spf
    assert "more than 10 DNS lookups" in spf["detail"]
    # p=none is a warning, not a failure
    assert c[("dmarc", "many.test")]["result"] == "warn"


def test_no_spf_record_and_dmarc_org_fallback(zone):
    conf = _conf(zone, "sub")
    r = _run(conf, "sub.send.test", "--source", "127.0.0.50", "--json")
    _, c = _checks(r)
    assert c[("spf", "127.0.0.50")]["detail"] == "no SPF record"
    dmarc = c[("dmarc", "sub.send.test")]
    assert dmarc["result"] == "pass" and "_dmarc.send.test" in dmarc["detail"], dmarc


def test_dmarc_org_domain_by_public_suffix_list(zone):
    # co.uk is a public suffix: the organizational domain of news.example.co.uk is
    # example.co.uk (the last two labels would look at _dmarc.co.uk), and as a
    # subdomain it gets that record's sp=
    conf = _conf(zone, "psl")
    _, c = _checks(_run(conf, "news.example.co.uk", "--json"))
    dmarc = c[("dmarc", "news.example.co.uk")]
    assert dmarc["result"] == "pass", dmarc
    assert "at _dmarc.example.co.uk (organizational domain)" in dmarc["detail"], dmarc
    assert "sp=quarantine" in dmarc["detail"], dmarc
    # a public suffix has no organizational domain to fall back to
    _, c = _checks(_run(conf, "co.uk", "--json"))
    assert c[("dmarc", "co.uk")]["detail"] == "no DMARC record", c[("dmarc", "co.uk")]


def test_no_source(zone):
    conf = _conf(zone, "nosrc")
    r = _run(conf, "send.test", "--json")
    _, c = _checks(r)
    assert c[("spf", "send.test")]["result"] == "skip"
    assert c[("spf", "send.test")]["detail"] == "no source address to check"
    assert c[("ptr", "send.test")]["result"] == "skip"


def test_mismatched_ehlo_warns(zone):
    conf = _conf(zone, "ehlo", delivery__helo_name="other.send.test")
    r = _run(conf, "send.test", "--source", "127.0.0.50", "--json")
    _, c = _checks(r)
    ptr = c[("ptr", "127.0.0.50")]
    assert ptr["result"] == "warn" and "other.send.test" in ptr["detail"], ptr


@pytest.mark.parametrize("args", [[], ["send.test", "other.test"], ["send.test", "--source", "x"],
                                  ["send.test", "--dkim-key", "k.pem"], ["-bad-"],
                                  ["send.test", "--frob"], ["not a domain"]])
def test_usage_errors(zone, args):
    conf = _conf(zone, "usage")
    r = _run(conf, *args)
    assert r.returncode == 2, (args, r.stdout, r.stderr)
    assert r.stdout == b""
