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


def test_xm_remus_failback_dry_run_equals_xen_remus(xm, capsys, monkeypatch, tmp_path):
    """Two xend doubles (here on a Unix socket, the peer on 127.0.0.1 TCP):
    `xm remus-failback ... --dry-run` prints what `xen-remus failback
    --toolstack xend ... --dry-run` prints, with the same exit status."""
    d = tempfile.mkdtemp(prefix="xm", dir="/tmp")
    img, peer_img = str(tmp_path / "guest.img"), str(tmp_path / "peer-guest.img")
    for p in (img, peer_img):
        with open(p, "wb") as fh:
            fh.truncate(1 << 20)
    here, peer = XendDouble("hostb"), XendDouble("hosta")
    here.add_domain("guest", disks=[("tap2", "tap:remus:hostb:9000|aio:%s" % img, "xvda", "w")])
    here.add_peer("127.0.0.1", peer)
    srv = XendServer(os.path.join(d, "x.sock"), here).start()
    psrv = XendServer(("127.0.0.1", 0), peer).start()
    try:
        monkeypatch.setenv("XM_SERVER", srv.uri)
        args = ["guest", "127.0.0.1", "--dry-run", "--peer-uri", psrv.uri, "--dest", peer_img]
        rc, out, err = run_xm(xm, capsys, "remus-failback", *args)
        direct = cli.main(["failback", "--toolstack", "xend"] + args)
        dout, derr = capsys.readouterr()
    finally:
        srv.stop()
        psrv.stop()
        os.rmdir(d)
    assert "preflight:" in out and "domain-here" in out
    assert (rc, out, err) == (direct, dout, derr)
