"""``XendDomain.domain_remus_*`` exported over XML-RPC as ``xend.domain.remus_*``.

xend cannot run here.  ``FakeXendDomain`` stands in for ``XendDomain`` (a
class with ``domain_*`` methods and an ``instance()`` made after our
install, as patches/0002 arranges), and ``export`` repeats what xend's
``XMLRPCServer.run`` does per docs/xen-facts.md section 1: every callable
``domain_*`` attribute of the instance except ``domain_create`` and
``domain_restore`` becomes ``xend.domain.<rest>``.  The server is a real
XML-RPC server on 127.0.0.1 and the client a real ``ServerProxy``, like
xm's.  The runner (a port) records the child's argv and plays its result.
"""
from __future__ import absolute_import, division, print_function

import threading

import pytest
from six.moves import xmlrpc_client, xmlrpc_server

from tests.unit.test_xm_register import cli_parser
from xen_remus_ext.errors import ToolstackError, ValidationError
from xen_remus_ext.xend import domain as xend_domain


class FakeXendDomain(object):
    def domain_lookup(self, domid):
        return domid

    def domain_migrate(self, domid, dst, live=False, port=0, node=-1, ssl=None, chs=False):
        return 0

    def domain_create(self, config):
        raise AssertionError("excluded from export")


class PlayRunner(object):
    def __init__(self, rc=0, out=b"", err=b""):
        self.result = (rc, out, err)
        self.argvs = []

    def run(self, argv, input=None, timeout=None, env=None):
        self.argvs.append(list(argv))
        return self.result


def export(server, inst):
    """xend's registration loop for XendDomain (stand-in, see module doc)."""
    names = []
    for name in dir(inst):
        fn = getattr(inst, name)
        if name.startswith("domain_") and callable(fn) and name not in ("domain_create",
                                                                          "domain_restore"):
            server.register_function(fn, "xend.domain.%s" % name[7:])
            names.append(name[7:])
    return names


@pytest.fixture
def xend():
    """A fresh XendDomain-like class, our methods installed, served on 127.0.0.1."""
    cls = type("XendDomain", (FakeXendDomain,), {})
    runner = PlayRunner(0, b"web1: failback done\n")
    added = xend_domain.install(cls, runner=runner, python="/usr/bin/python2.7",
                                parser=cli_parser())
    inst = cls()  # instance() runs after the patch's install, before the server starts
    server = xmlrpc_server.SimpleXMLRPCServer(("127.0.0.1", 0), logRequests=False,
                                              allow_none=False)
    names = export(server, inst)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    t.daemon = True
    t.start()
    proxy = xmlrpc_client.ServerProxy("http://127.0.0.1:%d" % server.server_address[1])
    try:
        yield proxy, runner, names, added
    finally:
        server.shutdown()
        server.server_close()


def test_methods_are_exported_by_xends_loop(xend):
    _proxy, _runner, names, added = xend
    assert added == ["domain_remus_failback", "domain_remus_hooks", "domain_remus_protect", "domain_remus_resync",
                     "domain_remus_status"]
    for name in ("remus_failback", "remus_hooks", "remus_protect", "remus_resync", "remus_status", "migrate",
                 "lookup"):
        assert name in names
    assert "create" not in names


def test_remus_failback_over_xmlrpc_runs_the_cli(xend):
    proxy, runner, _names, _added = xend
    out = proxy.xend.domain.remus_failback("web1", "10.0.0.1", ["--dry-run"])
    assert out == "web1: failback done\n"
    assert runner.argvs == [["/usr/bin/python2.7", "-m", "xen_remus_ext", "failback",
                             "--toolstack", "xend", "web1", "10.0.0.1", "--dry-run"]]


def test_options_as_a_dict_and_domid_as_int(xend):
    proxy, runner, _names, _added = xend
    proxy.xend.domain.remus_resync(7, "h2", {"toolstack": "sim", "rate": 50, "verify": True,
                                             "dry_run": False})
    assert runner.argvs[-1][3:] == ["resync-domain", "7", "h2", "--rate", "50",
                                    "--toolstack", "sim", "--verify"]


def test_status_without_domain(xend):
    proxy, runner, _names, _added = xend
    proxy.xend.domain.remus_status()
    assert runner.argvs[-1][3:] == ["status"]
    proxy.xend.domain.remus_status("web1", ["--json"])
    assert runner.argvs[-1][3:] == ["status", "web1", "--json"]


def test_failure_becomes_a_fault_with_the_message():
    cls = type("XendDomain", (FakeXendDomain,), {})
    runner = PlayRunner(1, b"", b"xen-remus: web1: split brain: both copies have new writes\n")
    xend_domain.install(cls, runner=runner, parser=cli_parser())
    with pytest.raises(ToolstackError) as exc:
        cls().domain_remus_failback("web1", "h1")
    msg = str(exc.value)
    assert "expected exit status 0, got 1" in msg and "split brain" in msg
    assert "xen-remus: web1" not in msg  # the prefix is not repeated


def test_bad_arguments_are_refused_before_running():
    cls = type("XendDomain", (FakeXendDomain,), {})
    runner = PlayRunner()
    xend_domain.install(cls, runner=runner, parser=cli_parser())
    with pytest.raises(ValidationError):
        cls().domain_remus_failback("", "h1")
    with pytest.raises(ValidationError):
        cls().domain_remus_resync("web1", "h1", {"x": [1]})
    with pytest.raises(ValidationError):
        cls().domain_remus_resync("web1", "h1", "--dry-run")
    assert runner.argvs == []


def test_install_keeps_existing_methods():
    def own(self, *a):
        return "xend's own"
    cls = type("XendDomain", (FakeXendDomain,), {"domain_remus_status": own})
    added = xend_domain.install(cls, runner=PlayRunner(), parser=cli_parser())
    assert "domain_remus_status" not in added
    assert cls().domain_remus_status() == "xend's own"


def test_real_child_process_of_the_real_cli():
    """Through the real runner and the real xen-remus, when it has `status`."""
    from xen_remus_ext.xm import commands as xm_commands
    if xm_commands.subparser_for(xm_commands.build_cli_parser(), "status") is None:
        pytest.skip("this tree's xen-remus has no `status` command yet (cli/failback_cmd.py)")
    import sys
    cls = type("XendDomain", (FakeXendDomain,), {})
    xend_domain.install(cls, python=sys.executable)
    try:
        out = cls().domain_remus_status(None, ["--help"])
    except ToolstackError as exc:  # the child ran and failed: still the real path
        out = str(exc)
    assert "status" in out
