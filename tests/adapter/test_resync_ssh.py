"""``HOST:PATH`` destinations through a real ssh to an sshd we start on 127.0.0.1.

The remote ``xen-remus`` is replaced through ``XEN_REMUS_REMOTE_CMD`` by
this checkout run with a venv's python and its own state directory (the
other "host"'s /var/lib/xen-remus-ext).  Needs root (sshd).
"""
from __future__ import absolute_import, division, print_function

import os
import sys

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from tests.adapter.sshd_util import Sshd, remote_cmd
from xen_remus_ext.errors import ResyncError, SplitBrainError
from xen_remus_ext.resync import api, meta

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not Sshd.usable(), reason="needs root and /usr/sbin/sshd")


@pytest.fixture
def remote(tmp_path, monkeypatch):
    rstate = str(tmp_path / "remote-state")
    monkeypatch.setenv("XEN_REMUS_REMOTE_CMD", remote_cmd(sys.executable, rstate))
    return rstate


def remote_meta(rstate, path, monkeypatch):
    old = os.environ["XEN_REMUS_STATE_DIR"]
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", rstate)
    try:
        return meta.load(path)
    finally:
        monkeypatch.setenv("XEN_REMUS_STATE_DIR", old)


def test_ssh_checksum_resync_and_verify(tmp_path, sshd, remote, monkeypatch):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst with space.img"))
    mutate(dst, 6, seed=8)
    res = api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh, verify=True)
    assert same(src, dst) and res.verified and res.bytes_sent < 2 * MiB
    assert api.verify(src, "127.0.0.1:" + dst, ssh=sshd.ssh).identical
    rm = remote_meta(remote, dst, monkeypatch)
    assert rm.consistent and rm.current == meta.load(src).current


def test_ssh_split_brain_refused(tmp_path, sshd, remote, monkeypatch):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh)
    meta.rotate(src)
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", remote)
    meta.rotate(dst)                              # the remote copy took its own writes
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    mutate(dst, 1)
    before = open(dst, "rb").read()
    with pytest.raises(SplitBrainError):
        api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh)
    assert open(dst, "rb").read() == before


def test_ssh_failure_is_explained(tmp_path, sshd, remote):
    src = make_image(str(tmp_path / "src.img"), 1 * MiB)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, "127.0.0.1:" + str(tmp_path / "missing.img"), ssh=sshd.ssh)
    assert "missing.img" in str(ei.value)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, "127.0.0.1:/x", ssh="ssh -p 1 -o BatchMode=yes -o ConnectTimeout=2")
    assert "exited with status 255" in str(ei.value)
