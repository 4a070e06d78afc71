"""XendToolstack pieces that need no server: URIs, string results, remus argv."""
from __future__ import absolute_import, division, print_function

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
