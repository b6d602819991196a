"""
Fixtures for the volleyd integration tests.

  volley           a started volleyd (config from the `conf` marker, if any); on
                   teardown: SIGTERM, bounded wait, exit status 0, and no "error"
                   record in volleyd.log unless the test is marked expect_errors
                   (or sets volley.expect_errors = True).
  volley_factory   make(overrides=None, start=True) -> Volley, for tests that need a
                   stopped daemon, several daemons, or to choose the config at run time.
  mailnet          a mail world on loopback for the delivery tests (mailnet.py):
                   dnsmasq, aiosmtpd / scripted / smtp-sink mail hosts on 127.0.0.x
                   sharing one port, and mailnet.settings() for volleyd; all stopped
                   at teardown.  Skips the test when dnsmasq or aiosmtpd is missing.
  tls_cert         (cert.pem, key.pem): a self-signed certificate for mx.tls.test.

Every volleyd runs with delivery.enabled = false (mail stays queued) unless the
test turns it on, normally through mailnet.settings(); its default DNS server never
answers, so nothing leaves the machine either way.

Markers:
  @pytest.mark.conf({"inject.max_recipients": 3})   per-test config keys
  @pytest.mark.expect_errors                          error records are expected
  @pytest.mark.crash                                  the SIGKILL crash-safety test

Binaries come from $VOLLEY_BUILD (default <repo>/build).
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from volley_harness import VOLLEYCTL, VOLLEYD, Volley  # noqa: E402
import mailnet as _mailnet  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "conf(dict): volleyd config keys for this test")
    config.addinivalue_line("markers", "expect_errors: error records in volleyd.log are expected")
    config.addinivalue_line("markers", "crash: SIGKILL crash-safety test (the most important one)")
    config.addinivalue_line("markers", "needs_volleyctl: skipped while build/volleyctl is missing")


def pytest_collection_modifyitems(config, items):
    if not VOLLEYD.exists():
        skip = pytest.mark.skip(reason="%s not built" % VOLLEYD)
        for item in items:
            item.add_marker(skip)
    elif not VOLLEYCTL.exists():
        skip = pytest.mark.skip(reason="%s not built" % VOLLEYCTL)
        for item in items:
            if "needs_volleyctl" in item.keywords:
                item.add_marker(skip)


def _teardown(v, expect_errors):
    problems = []
    died = v.died()
    if died:
        problems.append(died)
    if v.running():
        try:
            rc = v.stop()
            if rc != 0:
                problems.append("volleyd exited with status %r on SIGTERM" % rc)
        except Exception as e:  # the process was killed; keep checking the log
            problems.append(str(e))
    if not (expect_errors or v.expect_errors):
        errors = v.log_errors()
        if errors:
            problems.append("volleyd.log has error records:\n  " +
                            "\n  ".join(repr(r) for r in errors[:10]))
    v.cleanup()
    return problems


@pytest.fixture
def volley_factory(tmp_path, request):
    made = []
    expect_errors = request.node.get_closest_marker("expect_errors") is not None

    def make(overrides=None, start=True, name=None):
        d = tmp_path / (name or ("v%d" % len(made)))
        v = Volley(d, overrides)
        made.append(v)
        if start:
            v.start()
        return v

    yield make
    problems = []
    for v in made:
        problems += _teardown(v, expect_errors)
    if problems:
        pytest.fail("teardown: " + "\n".join(problems), pytrace=False)


@pytest.fixture
def volley(volley_factory, request):
    marker = request.node.get_closest_marker("conf")
    overrides = marker.args[0] if marker else None
    return volley_factory(overrides, name="volley")


@pytest.fixture
def mailnet(tmp_path):
    if not os.path.exists(_mailnet.DNSMASQ):
        pytest.skip("%s not installed" % _mailnet.DNSMASQ)
    if not _mailnet.HAVE_AIOSMTPD:
        pytest.skip("python3-aiosmtpd not installed")
    net = _mailnet.MailNet(tmp_path / "net")
    yield net
    net.close()


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory):
    return _mailnet.make_tls_cert(tmp_path_factory.mktemp("tls"), "mx.tls.test")
