"""A resync over a connection prepared beforehand (``resync.api.prepare``):
what the xend failback opens before the domain is suspended, so that the
suspend window holds only the delta.  Through a real ssh to an sshd on
127.0.0.1, the remote ``xen-remus receive`` being this checkout.  Needs root.
"""
from __future__ import absolute_import, division, print_function

import logging
import sys

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from tests.adapter.sshd_util import Sshd, remote_cmd
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api
from xen_remus_ext.resync.disksync import ResyncDiskSync

MiB = 1 << 20
pytestmark = pytest.mark.skipif(not Sshd.usable(), reason="needs root and /usr/sbin/sshd")


@pytest.fixture
def remote(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_REMOTE_CMD", remote_cmd(sys.executable, str(tmp_path / "remote-state")))


def no_new_connections(monkeypatch):
    def refuse(*a, **k):
        raise ResyncError("a new connection was opened")
    monkeypatch.setattr(api, "connect", refuse)


def test_a_prepared_connection_carries_the_resync_and_nothing_else_is_opened(tmp_path, sshd, remote,
                                                                              monkeypatch):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh)          # in step, with generations
    mutate(src, 5, seed=3)
    p = api.prepare("127.0.0.1:" + dst, ssh=sshd.ssh)
    assert p.dead() is None and p.seconds > 0 and p.info["size"] == 2 * MiB
    no_new_connections(monkeypatch)
    res = api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh, prepared=p)
    assert same(src, dst) and res.bytes_sent > 0
    assert p.closed


def test_a_dead_prepared_connection_is_replaced_and_the_data_still_goes(tmp_path, sshd, remote, caplog):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(src, 5, seed=4)
    p = api.prepare("127.0.0.1:" + dst, ssh=sshd.ssh)
    p.conn.proc.kill()                   # the ssh died while the domain was migrating
    p.conn.proc.wait()
    assert "exited" in p.dead()
    with caplog.at_level(logging.WARNING, logger="xen_remus_ext.resync.api"):
        api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh, prepared=p)
    assert same(src, dst)
    assert any("not usable" in r.getMessage() and "opening a new one" in r.getMessage() for r in caplog.records)


def test_disksync_prepare_then_sync_uses_it(tmp_path, sshd, remote, monkeypatch):
    src = make_image(str(tmp_path / "src.img"), 1 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(src, 3, seed=5)
    ds = ResyncDiskSync(ssh=sshd.ssh)
    assert ds.prepare(str(tmp_path / "local.img")) is None        # a local copy has nothing to open
    took = ds.prepare("127.0.0.1:" + dst)
    assert took > 0
    no_new_connections(monkeypatch)
    res = ds.sync(src, "127.0.0.1:" + dst, final=True)
    assert same(src, dst) and res["bytes_sent"] > 0
    ds.release_prepared()          # nothing left to close


def test_unused_prepared_connections_are_released(tmp_path, sshd, remote):
    src = make_image(str(tmp_path / "src.img"), 1 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    ds = ResyncDiskSync(ssh=sshd.ssh)
    ds.prepare("127.0.0.1:" + dst)
    proc = ds._prepared["127.0.0.1:" + dst].conn.proc
    ds.release_prepared()          # the migration failed before step 2
    assert proc.poll() is not None and ds._prepared == {}
    # the target's lock went with it: a later resync is not kept waiting
    mutate(src, 2, seed=6)
    api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh)
    assert same(src, dst)


def test_a_send_that_fails_on_the_prepared_connection_is_retried_on_a_new_one(tmp_path, sshd, remote,
                                                                               monkeypatch, caplog):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(src, 5, seed=7)
    p = api.prepare("127.0.0.1:" + dst, ssh=sshd.ssh)
    p.conn.proc.kill()
    p.conn.proc.wait()
    monkeypatch.setattr(p, "dead", lambda: None)     # it dies after the check, during the send
    with caplog.at_level(logging.WARNING, logger="xen_remus_ext.resync.api"):
        api.resync(src, "127.0.0.1:" + dst, ssh=sshd.ssh, prepared=p)
    assert same(src, dst)
    assert any("failed" in r.getMessage() and "sending again on a new one" in r.getMessage()
               for r in caplog.records)
