"""One Tracker contract over both trackers.

* Blktap2LogTracker against the log-driver double (stands in for tapdisk's
  ``log`` driver, which needs a Xen dom0; see test_tracker_blktap2_log.py);
* FiemapTracker on a real loop-mounted XFS with reflink (root only; skipped
  otherwise).

Writes are 4 KiB-aligned so both granularities (512-byte sectors, 4 KiB
blocks) report them exactly.
"""
from __future__ import absolute_import, division, print_function

import os
import shutil
import tempfile

import pytest

from tests.adapter.test_tracker_fiemap import xfs  # noqa: F401  (module fixture)
from tests.fakes.blktap2_log_driver import LogDriverDouble
from xen_remus_ext.model import Extent
from xen_remus_ext.ports import Tracker
from xen_remus_ext.trackers.blktap2_log import Blktap2LogTracker
from xen_remus_ext.trackers.fiemap import FiemapTracker

SIZE = 4 * 1024 * 1024


class Subject(object):
    def __init__(self, tracker, write):
        self.tracker = tracker
        self.write = write


@pytest.fixture(params=["blktap2-log+double", "fiemap+xfs"])
def subject(request):
    if request.param.startswith("blktap2"):
        d = tempfile.mkdtemp(prefix="tapc")
        name = "/srv/images/contract.img"
        drv = LogDriverDouble(name, SIZE // 512, d, d).start()
        try:
            yield Subject(Blktap2LogTracker(name, ctrl_dir=d, shm_dir=d),
                          lambda off, n: drv.write(off // 512, n // 512))
        finally:
            drv.stop()
            shutil.rmtree(d, ignore_errors=True)
        return
    mnt = request.getfixturevalue("xfs")
    path = os.path.join(mnt, "contract.img")
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))

    def write(off, n):
        fd = os.open(path, os.O_WRONLY)
        try:
            os.lseek(fd, off, os.SEEK_SET)
            os.write(fd, os.urandom(n))
        finally:
            os.close(fd)
    t = FiemapTracker(path)
    try:
        yield Subject(t, write)
    finally:
        t.drop()
        os.unlink(path)


def test_contract(subject):
    t, write = subject.tracker, subject.write
    assert isinstance(t, Tracker) and t.name in ("blktap2-log", "fiemap")
    assert not t.trustworthy()
    write(0, 4096)                         # before the mark
    t.mark()
    assert t.trustworthy()
    assert t.dirty_extents() == []
    write(8192, 4096)
    write(12288, 4096)                     # adjacent: merged
    write(SIZE - 4096, 4096)
    assert t.dirty_extents() == [Extent(8192, 8192), Extent(SIZE - 4096, 4096)]
    assert t.dirty_extents() == [Extent(8192, 8192), Extent(SIZE - 4096, 4096)]   # asking again changes nothing
    t.clear()
    assert t.dirty_extents() == []
    write(65536, 4096)
    assert t.dirty_extents() == [Extent(65536, 4096)]
    assert t.trustworthy()
    t.mark()
    assert t.dirty_extents() == []
