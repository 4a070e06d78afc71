"""`xm remus-status` runs the same code as `xen-remus status --toolstack xend`.

xm is the double tests/fakes/xm_main.py (xen.xm.main needs a Xen install);
xend is the XML-RPC double tests/fakes/xend_server.py on a Unix socket,
reached through ``XM_SERVER`` as xm and our xend adapter both honour.  The
registration, the argv translation and the xen-remus command are real.
"""
from __future__ import absolute_import, division, print_function

import os
import tempfile

import pytest
import six

from tests.fakes import xm_main as fake_xm
from tests.fakes.xend_server import XendDouble, XendServer
from xen_remus_ext.cli import main as cli
from xen_remus_ext.xm import register as xm_register


@pytest.fixture
def xend(monkeypatch):
    d = tempfile.mkdtemp(prefix="xm", dir="/tmp")  # short: AF_UNIX paths are limited
    dbl = XendDouble("hosta")
    dbl.add_domain("guest", disks=[("tap2", "tap:remus:10.0.0.2:9000|aio:/srv/guest.img",
                                    "xvda", "w")])
    srv = XendServer(os.path.join(d, "x.sock"), dbl).start()
    monkeypatch.setenv("XM_SERVER", srv.uri)
    try:
        yield srv
    finally:
        srv.stop()
        os.rmdir(d)


@pytest.fixture
def xm():
    six.moves.reload_module(fake_xm)
    xm_register.register(fake_xm)
    return fake_xm


def run_xm(xm, capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        xm.main(["xm"] + list(argv))
    return (exc.value.code,) + tuple(capsys.readouterr())


def test_xm_remus_status_equals_xen_remus_status(xend, xm, capsys):
    rc, out, err = run_xm(xm, capsys, "remus-status")
    assert rc == 0, err
    assert "guest" in out
    assert cli.main(["status", "--toolstack", "xend"]) == 0
    assert capsys.readouterr()[0] == out


def test_xm_prefix_and_options_reach_the_command(xend, xm, capsys):
    rc, out, err = run_xm(xm, capsys, "remus-st", "guest", "--json")
    assert rc == 0, err
    assert cli.main(["status", "guest", "--toolstack", "xend", "--json"]) == 0
    assert capsys.readouterr()[0] == out and out.lstrip().startswith(("{", "["))


def test_xm_remus_status_without_xend_fails_cleanly(xm, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("XM_SERVER", "httpu://%s" % (tmp_path / "absent.sock"))
    rc, _out, err = run_xm(xm, capsys, "remus-status")
    assert rc == 1
    assert "is xend running?" in err and "Traceback" not in err
