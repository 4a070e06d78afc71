"""The doubles themselves: transports and strictness.

* XendToolstack reaches the xend double over TCP (``http://127.0.0.1``, as
  xend's xen-tcp-xmlrpc-server) and through ``XM_SERVER``; faults keep xend's
  message.  (The double stands in for xend, which needs a hypervisor.)
* The fake xl refuses argv the adapter never sends, and `xl list` rendering
  matches the golden tests/data/xl/list.txt byte for byte.
"""
from __future__ import absolute_import, division, print_function

import io
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.fakes.xend_server import XendDouble, XendServer
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.xend import XendToolstack

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")
XL_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "xl")


@pytest.fixture
def tcp_xend():
    dbl = XendDouble("hosta")
    dbl.add_domain("guest")
    srv = XendServer(("127.0.0.1", 0), dbl).start()
    yield srv
    srv.stop()


def test_xend_over_tcp_and_xm_server(tcp_xend, monkeypatch):
    assert tcp_xend.uri.startswith("http://127.0.0.1:")
    ts = XendToolstack(tcp_xend.uri, processes=object())
    assert sorted(d.name for d in ts.list_domains()) == ["Domain-0", "guest"]
    monkeypatch.setenv("XM_SERVER", tcp_xend.uri)
    assert XendToolstack(processes=object()).domain_info("guest").name == "guest"


def test_xend_fault_messages(tcp_xend):
    ts = XendToolstack(tcp_xend.uri, processes=object())
    with pytest.raises(ToolstackError) as err:
        ts.destroy("Domain-0")
    assert str(err.value) == "xend xend.domain.destroy(Domain-0): Cannot destroy privileged domain Domain-0"
    with pytest.raises(ToolstackError) as err:
        ts.restore("/nonexistent/save")
    assert "can't read guest state file /nonexistent/save" in str(err.value)


def run_xl(tmp_path, *args):
    state = str(tmp_path / "state.json")
    if not os.path.exists(state):
        shutil.copy(os.path.join(XL_DATA, "state.json"), state)
    env = dict(os.environ, FAKE_XL_STATE=state)
    proc = subprocess.Popen([sys.executable, os.path.join(FAKES, "fake_xl.py")] + list(args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    return proc.returncode, out.decode("utf-8"), err.decode("utf-8")


def test_fake_xl_list_matches_golden(tmp_path):
    rc, out, _ = run_xl(tmp_path, "list")
    with io.open(os.path.join(XL_DATA, "list.txt"), encoding="utf-8") as f:
        assert (rc, out) == (0, f.read())
    rc, out, _ = run_xl(tmp_path, "list", "-l", "guest")
    with io.open(os.path.join(XL_DATA, "guest.json"), encoding="utf-8") as f:
        assert json.loads(out) == [{"domid": 3, "config": json.load(f)}]


@pytest.mark.parametrize("argv", [
    ["list", "-v"], ["migrate", "--debug", "guest", "hostb"], ["pause"], ["pause", "guest", "extra"],
    ["save", "-p", "guest", "/tmp/x"], ["remus", "-i", "fast", "guest", "hostb"], ["create", "/etc/xen/g.cfg"],
    ["info", "-n"], [],
])
def test_fake_xl_is_strict(tmp_path, argv):
    rc, out, err = run_xl(tmp_path, *argv)
    assert rc == 1 and out == ""
    assert err.startswith("fake xl: unexpected argv ")


def test_fake_xl_unknown_domain_is_xls_message(tmp_path):
    assert run_xl(tmp_path, "pause", "ghost") == (2, "", "ghost is an invalid domain identifier (rc=-6)\n")
