"""Blktap2LogTracker against a double of blktap2's log driver.

The double (tests/fakes/blktap2_log_driver.py) stands in for tapdisk's
``log`` driver, which needs a Xen dom0 with blktap; it follows block-log.c
and log.h (control commands, reply sizes, one session at a time, 20-byte
requests with short reads ignored, the exported range records in the shm
region).  Real Unix sockets, real shared-memory files, real mmap.
"""
from __future__ import absolute_import, division, print_function

import os
import shutil
import socket
import tempfile
import uuid

import pytest

from tests.fakes.blktap2_log_driver import LogDriverDouble
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.model import Extent
from xen_remus_ext.trackers import merge_extents
from xen_remus_ext.trackers.blktap2_log import Blktap2LogTracker, ctl_path, shm_name

IMAGE = "/var/lib/xen/images/guest.img"
SECTORS = 16384  # an 8 MiB disk


@pytest.fixture
def dirs():
    d = tempfile.mkdtemp(prefix="tap")
    os.mkdir(os.path.join(d, "tap"))
    os.mkdir(os.path.join(d, "shm"))
    yield os.path.join(d, "tap"), os.path.join(d, "shm")
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def driver(dirs):
    drv = LogDriverDouble(IMAGE, SECTORS, *dirs).start()
    yield drv
    drv.stop()


def tracker(dirs, **kw):
    return Blktap2LogTracker(IMAGE, ctrl_dir=dirs[0], shm_dir=dirs[1], **kw)


def test_paths_follow_the_driver():
    assert ctl_path(IMAGE) == "/var/run/tap/log__guest.img.ctl"
    assert ctl_path("/srv/a:b/disk:1") == "/var/run/tap/log__disk_1.ctl"
    assert shm_name(IMAGE) == "/log__var_lib_xen_images_guest.img.wlog"
    with pytest.raises(ResyncError):
        ctl_path("noslash.img")


def test_mark_track_clear(dirs, driver):
    t = tracker(dirs)
    assert not t.trustworthy()
    driver.write(100, 8)                 # before the mark: not reported
    t.mark()
    assert t.trustworthy()
    driver.write(0, 1)
    driver.write(8, 8)
    driver.write(16, 8)                  # touches the previous run: one extent
    driver.write(SECTORS - 2, 2)
    got = t.dirty_extents()
    assert got == [Extent(0, 512), Extent(8 * 512, 16 * 512), Extent((SECTORS - 2) * 512, 1024)]
    driver.write(4, 1)
    assert t.dirty_extents() == [Extent(0, 512), Extent(4 * 512, 512), Extent(8 * 512, 16 * 512),
                                 Extent((SECTORS - 2) * 512, 1024)]   # accumulated: getw cleared the driver
    t.clear()
    assert t.dirty_extents() == []
    driver.write(40, 1)
    assert t.dirty_extents() == [Extent(40 * 512, 512)]
    assert t.trustworthy()
    # every request went as one 20-byte message (the driver ignores shorter reads)
    assert driver.requests and all(kind == "msg" and len(data) == 20 for kind, data in driver.requests)


def test_state_survives_the_process(dirs, driver, tmp_path):
    state = str(tmp_path / "tracker.json")
    t = tracker(dirs, state_path=state)
    t.mark()
    driver.write(10, 2)
    assert t.dirty_extents() == [Extent(5120, 1024)]
    again = tracker(dirs, state_path=state)
    assert again.trustworthy()
    driver.write(20, 1)
    assert again.dirty_extents() == [Extent(5120, 1024), Extent(10240, 512)]


class _Killed(Exception):
    """Stands for SIGKILL between getw's reply and the save of its ranges."""


def test_a_process_killed_after_getw_loses_no_range(dirs, driver, tmp_path, monkeypatch):
    # the failback process marks and pre-copies; killed inside the final
    # pass's getw, before saving what it got; the migration hook (another
    # process) reopens the tracker from the state file: the ranges getw took
    # from the driver must still be there
    state = str(tmp_path / "tracker.json")
    t = tracker(dirs, state_path=state)
    t.mark()
    driver.write(10, 2)
    assert t.dirty_extents() == [Extent(5120, 1024)]
    driver.write(30, 4)                  # written after the last pre-copy pass
    real = Blktap2LogTracker._export

    def killed(self, cmd):
        real(self, cmd)                  # the driver exported and cleared its bitmap
        raise _Killed()
    monkeypatch.setattr(Blktap2LogTracker, "_export", killed)
    with pytest.raises(_Killed):
        t.dirty_extents()
    monkeypatch.setattr(Blktap2LogTracker, "_export", real)
    hook = tracker(dirs, state_path=state)
    assert hook.trustworthy()
    driver.write(50, 1)
    assert hook.dirty_extents() == [Extent(5120, 1024), Extent(30 * 512, 4 * 512), Extent(50 * 512, 512)]
    driver.write(60, 1)                  # read back once: later exports go on as usual
    assert hook.dirty_extents() == [Extent(5120, 1024), Extent(30 * 512, 4 * 512), Extent(50 * 512, 512),
                                    Extent(60 * 512, 512)]


def test_an_unreadable_interrupted_export_makes_it_untrustworthy(dirs, driver, tmp_path, monkeypatch):
    state = str(tmp_path / "tracker.json")
    t = tracker(dirs, state_path=state)
    t.mark()
    driver.write(30, 4)
    real = Blktap2LogTracker._export

    def killed(self, cmd):
        real(self, cmd)
        raise _Killed()
    monkeypatch.setattr(Blktap2LogTracker, "_export", killed)
    with pytest.raises(_Killed):
        t.dirty_extents()
    monkeypatch.setattr(Blktap2LogTracker, "_export", real)
    os.unlink(os.path.join(dirs[1], shm_name(IMAGE).lstrip("/")))   # the region is gone
    hook = tracker(dirs, state_path=state)
    assert hook.trustworthy()
    with pytest.raises((IOError, OSError)):
        hook.dirty_extents()             # this export cannot be read either
    assert not hook.trustworthy() and "interrupted export" in hook.lost_reason
    assert not tracker(dirs, state_path=state).trustworthy()     # and it is saved so


def test_an_export_that_never_ran_reads_nothing_back(dirs, driver, tmp_path, monkeypatch):
    # killed after shmp (its marker on the region) but before getw: the
    # bitmap kept every bit, and the marker is not taken for a range
    state = str(tmp_path / "tracker.json")
    t = tracker(dirs, state_path=state)
    t.mark()
    driver.write(30, 4)

    def killed(self, cmd):
        self.request(b"shmp")
        raise _Killed()
    monkeypatch.setattr(Blktap2LogTracker, "_export", killed)
    with pytest.raises(_Killed):
        t.dirty_extents()
    monkeypatch.undo()
    hook = tracker(dirs, state_path=state)
    assert hook.dirty_extents() == [Extent(30 * 512, 4 * 512)]
    assert hook.trustworthy()


def test_second_session_is_refused_with_a_clear_error(dirs, driver):
    hog = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    hog.connect(driver.ctl_path)
    try:
        # make sure the driver accepted the hog first
        hog.sendall(b"kick" + b"\0" * 16)
        assert hog.recv(20)[:4] == b"kick"
        with pytest.raises(ResyncError) as err:
            tracker(dirs).mark()
        assert "another control session open?" in str(err.value)
    finally:
        hog.close()


def test_driver_restart_makes_it_untrustworthy(dirs, driver):
    t = tracker(dirs)
    t.mark()
    driver.write(1, 1)
    driver.stop()
    assert not t.trustworthy()
    with pytest.raises(ResyncError):
        t.dirty_extents()
    fresh = LogDriverDouble(IMAGE, SECTORS, *dirs).start()
    try:
        fresh.write(2, 1)
        assert not t.trustworthy()
        got = t.dirty_extents()           # still answers what it can
        assert got == [Extent(1024, 512)]
        assert not t.trustworthy() and "restarted" in t.lost_reason
        t.mark()
        assert t.trustworthy()
    finally:
        fresh.stop()


@pytest.mark.slow
def test_export_overflow_is_reported(dirs):
    # every other sector dirty: more runs than the 4 MiB half-region holds
    sectors = 2 * (4 * 1024 * 1024 // 16) + 64
    drv = LogDriverDouble(IMAGE, sectors, *dirs).start()
    try:
        t = tracker(dirs)
        t.mark()
        with drv.lock:
            for i in range(0, len(drv.bitmap)):
                drv.bitmap[i] = 0x55
        got = t.dirty_extents()
        assert len(got) == 4 * 1024 * 1024 // 16
        assert not t.trustworthy() and "dirty runs" in t.lost_reason
    finally:
        drv.stop()


def test_real_dev_shm(tmp_path):
    if not os.path.isdir("/dev/shm"):
        pytest.skip("no /dev/shm")
    name = "/srv/xre-test-%s/disk.img" % uuid.uuid4().hex[:8]
    drv = LogDriverDouble(name, 1024, str(tmp_path), "/dev/shm").start()
    try:
        assert os.path.exists("/dev/shm" + shm_name(name))
        t = Blktap2LogTracker(name, ctrl_dir=str(tmp_path))
        t.mark()
        drv.write(7, 3)
        assert t.dirty_extents() == [Extent(7 * 512, 3 * 512)]
    finally:
        drv.stop()
    assert not os.path.exists("/dev/shm" + shm_name(name))


def test_merge_extents():
    assert merge_extents([Extent(10, 5), Extent(0, 10), Extent(30, 0), (12, 10), Extent(40, 1)]) == [
        Extent(0, 22), Extent(40, 1)]
