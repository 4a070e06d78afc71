"""A target held by another resync is refused as TargetBusyError, also when
the refusal comes from a remote receiver (the ERROR record's ``code``), so
the failback waits on the class, not on the wording of a message.

Real receivers: the ``receive --stdio`` child of a local checksum resync and
a ResyncServer on 127.0.0.1; the lock is the receiver's own flock.
"""
from __future__ import absolute_import, division, print_function

import fcntl

import pytest

from tests.adapter.resync_util import make_image, mutate, write_key
from xen_remus_ext.errors import TargetBusyError
from xen_remus_ext.failback.disks import sync_waiting
from xen_remus_ext.resync import api
from xen_remus_ext.resync.transport import ResyncServer

MiB = 1 << 20


@pytest.fixture
def pair(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = str(tmp_path / "dst.img")
    with open(src, "rb") as a, open(dst, "wb") as b:
        b.write(a.read())
    mutate(dst, 5, seed=3)
    return src, dst


def _held(path):
    f = open(path, "r+b")
    fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    return f


def _same(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def test_local_child_receiver_reports_busy_as_the_class(pair):
    src, dst = pair
    lock = _held(dst)
    try:
        with pytest.raises(TargetBusyError) as exc:
            api.resync(src, dst, mode="checksum")
        assert "another resync is writing" in str(exc.value)
        assert not _same(src, dst)
    finally:
        lock.close()
    api.resync(src, dst, mode="checksum")
    assert _same(src, dst)


def test_tcp_receiver_reports_busy_as_the_class(pair, tmp_path):
    src, dst = pair
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer("127.0.0.1:0", key, {"disk0": dst}).start()
    try:
        url = "tcp://127.0.0.1:%d/disk0" % srv.address[1]
        lock = _held(dst)
        try:
            with pytest.raises(TargetBusyError):
                api.resync(src, url, mode="checksum", key_file=key)
        finally:
            lock.close()
        assert not _same(src, dst)
        api.resync(src, url, mode="checksum", key_file=key)
        assert _same(src, dst)
    finally:
        srv.stop()


class _ReleasingClock(object):
    """Releases the lock at the first wait, as a finishing earlier pass would."""

    def __init__(self, lock):
        self.lock, self.t, self.waits = lock, 0.0, 0

    def now(self):
        return self.t

    def sleep(self, seconds):
        self.waits += 1
        self.lock.close()
        self.t += seconds


class _RealDisks(object):
    def sync(self, src, dest, **kw):
        return api.resync(src, dest, mode="checksum")


def test_failback_waits_out_a_busy_target_then_syncs(pair):
    src, dst = pair
    clock = _ReleasingClock(_held(dst))
    sync_waiting(_RealDisks(), clock, {"settle_timeout": 5, "settle_poll": 0.1}, src, dst)
    assert clock.waits == 1 and _same(src, dst)
