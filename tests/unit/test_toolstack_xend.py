"""XendToolstack pieces: URIs, string results, remus argv, and which migrate hook the running xend has."""
from __future__ import absolute_import, division, print_function

import os

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.xend import DEFAULT_URI, UnixTransport, XendToolstack, _unescape, server_proxy


def test_default_uri_and_xm_server(monkeypatch, tmp_path):
    monkeypatch.delenv("XM_SERVER", raising=False)
    assert XendToolstack(processes=object()).uri == DEFAULT_URI == "httpu:///var/run/xend/xmlrpc.sock"
    monkeypatch.setenv("XM_SERVER", "http://127.0.0.1:8006/")
    assert XendToolstack(processes=object()).uri == "http://127.0.0.1:8006/"


def test_server_proxy_schemes():
    proxy = server_proxy("httpu:///var/run/xend/xmlrpc.sock")
    transport = proxy._ServerProxy__transport
    assert isinstance(transport, UnixTransport) and transport.socket_path == "/var/run/xend/xmlrpc.sock"
    with pytest.raises(ToolstackError):
        server_proxy("httpu://relative.sock")
    with pytest.raises(ToolstackError):
        server_proxy("ftp://hostb/")
    with pytest.raises(ToolstackError):
        server_proxy("ssh:///var/run/xend/xmlrpc.sock")     # no host
    ssh = server_proxy("ssh://root@hostb/run/x.sock", ssh=["ssh", "-p", "2222"])._ServerProxy__transport
    assert ssh.argv == ["ssh", "-p", "2222", "root@hostb", "xen-remus", "xend-relay", "--socket", "/run/x.sock"]
    assert server_proxy("ssh://hostb")._ServerProxy__transport.argv == ["ssh", "hostb", "xen-remus", "xend-relay"]


def test_unescape_undoes_xends_repr():
    assert _unescape("plain") == "plain"
    assert _unescape("a\\nb\\'c") == "a\nb'c"
    assert _unescape(["a\\n"]) == ["a\\n"]       # only top-level strings are escaped


def test_remus_argv_and_refusals():
    ts = XendToolstack("httpu:///x.sock", remus=["/usr/bin/remus"], processes=object())
    assert ts.remus_argv("guest", "10.0.0.2") == ["/usr/bin/remus", "-i", "200", "guest", "10.0.0.2"]
    assert ts.remus_argv("guest", "10.0.0.2", interval_ms=100, port=8002, net=False, blackhole=True) == [
        "/usr/bin/remus", "-i", "100", "-p", "8002", "--no-net", "--blackhole", "guest", "10.0.0.2"]
    for kw in ({"disk": False}, {"unsafe": True}):
        with pytest.raises(ToolstackError):
            ts.remus_argv("guest", "10.0.0.2", **kw)
    for kw in ({"paused": True}, {"ssh": "ssh"}, {"config": "/etc/xen/g.cfg"}):
        with pytest.raises(ToolstackError) as err:
            ts.migrate("guest", "hostb", **kw)
        assert "only with xl" in str(err.value)


def test_unreachable_xend_is_a_toolstack_error(tmp_path):
    ts = XendToolstack("httpu://%s" % (tmp_path / "absent.sock"), processes=object())
    with pytest.raises(ToolstackError) as err:
        ts.list_domains()
    assert "is xend running?" in str(err.value) and "absent.sock" in str(err.value)


def _xend_with_hooks(tmp_path, report=None):
    from tests.fakes.xend_server import XendServer
    srv = XendServer(str(tmp_path / "xmlrpc.sock"))
    if report is not None:
        srv.double.domain_remus_hooks = lambda: report
    return srv.start()


def test_migrate_hook_asks_the_running_xend(tmp_path):
    ours = {"migration_tool": "/usr/bin/xen-remus hook", "tool_is_ours": True, "blktap_override": []}
    override = {"migration_tool": "", "tool_is_ours": False, "blktap_override": ["BlktapController"]}
    none = {"migration_tool": "/site/tool", "tool_is_ours": False, "blktap_override": []}
    for report, ok, word in ((ours, True, "xen-remus hook"), (override, True, "BlktapController"),
                             (none, False, "/site/tool")):
        srv = _xend_with_hooks(tmp_path, report)
        try:
            got_ok, detail = XendToolstack(uri=srv.uri).migrate_hook(config_path=str(tmp_path / "absent.sxp"))
        finally:
            srv.stop()
        assert (got_ok, word in detail) == (ok, True), detail


def test_migrate_hook_of_an_xend_without_our_methods_reads_its_config(tmp_path):
    import time
    cfg = tmp_path / "xend-config.sxp"
    srv = _xend_with_hooks(tmp_path)
    try:
        ts = XendToolstack(uri=srv.uri)
        cfg.write_text(u"(xend-relocation-server yes)\n")
        ok, detail = ts.migrate_hook(config_path=str(cfg))
        assert not ok and "hook-config install" in detail
        old = time.time() - 3600
        cfg.write_text(u"(external-migration-tool '/usr/bin/xen-remus hook')\n")
        os.utime(str(cfg), (old, old))
        ok, detail = ts.migrate_hook(config_path=str(cfg))
        assert ok and "/usr/bin/xen-remus hook" in detail
        os.utime(str(cfg), None)     # installed after xend started: xend has not read it
        later = time.time() + 60
        os.utime(str(cfg), (later, later))
        ok, detail = ts.migrate_hook(config_path=str(cfg))
        assert not ok and "restart xend" in detail
    finally:
        srv.stop()


def test_list_domains_sees_paused_domains(tmp_path):
    """xend.domains lists only domains in the running state (as real xend:
    domains_with_state(detail, DOM_STATE_RUNNING, full)); a paused domain of
    the same name on a peer must still count, so the adapter asks for 'all'."""
    srv = _xend_with_hooks(tmp_path)
    srv.double.add_domain("web2", paused=True)
    try:
        ts = XendToolstack(uri=srv.uri)
        running = [dict(k[:2] for k in sxp[1:] if isinstance(k, list) and len(k) > 1).get("name")
                   for sxp in ts.call("xend.domains", True, False)]
        assert "web2" not in running
        infos = dict((d.name, d) for d in ts.list_domains())
        assert "web2" in infos and infos["web2"].paused
    finally:
        srv.stop()


class _Runner(object):
    def __init__(self, results):
        self.results = list(results)
        self.calls = []

    def run(self, argv, input=None, timeout=None, env=None):
        self.calls.append(list(argv))
        return self.results.pop(0)


def test_create_from_file_runs_xm_create_here_only():
    runner = _Runner([(0, b"Started domain g\n", b""), (1, b"", b"Error: config file bad.cfg: no such file\n")])
    ts = XendToolstack("httpu:///x.sock", runner=runner, processes=object())
    ts.create_from_file("/etc/xen/g.cfg")
    with pytest.raises(ToolstackError) as err:
        ts.create_from_file("/etc/xen/bad.cfg")
    assert "xm create /etc/xen/bad.cfg: exit 1: Error: config file bad.cfg" in str(err.value)
    assert runner.calls == [["xm", "create", "/etc/xen/g.cfg"], ["xm", "create", "/etc/xen/bad.cfg"]]
    # a peer's xend (over ssh) starts nothing here
    peer = XendToolstack("ssh://hostb", runner=runner, ssh=["ssh", "--"], host="hostb", processes=object())
    with pytest.raises(ToolstackError):
        peer.create_from_file("/etc/xen/g.cfg")
    assert len(runner.calls) == 2
