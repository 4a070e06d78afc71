"""FiemapTracker on a real XFS (mkfs.xfs -m reflink=1) loop mount, and its
pure map comparison.  The XFS tests need root (loop devices, mount); they
skip cleanly otherwise."""
from __future__ import absolute_import, division, print_function

import os
import shutil
import subprocess
import tempfile

import pytest

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.model import Extent
from xen_remus_ext.trackers.fiemap import FIEMAP_EXTENT_DELALLOC, FiemapTracker, plan_dirty_extents

MiB = 1024 * 1024


def test_plan_identical_maps_are_clean():
    m = [(0, 1000, 8192, 0x2000), (16384, 5000, 4096, 0x2001)]
    assert plan_dirty_extents(m, m, 20480, 20480) == []


def test_plan_differences():
    old = [(0, 100000, 65536, 0)]
    new = [(0, 100000, 4096, 0), (4096, 900000, 4096, 0), (8192, 100000 + 8192, 57344, 0),
           (65536, 700000, 4096, 0)]
    assert plan_dirty_extents(new, old, 69632, 65536) == [Extent(4096, 4096), Extent(65536, 4096)]
    # a hole punched where data was, and an unstable extent, are dirty too
    assert plan_dirty_extents([(0, 100000, 4096, 0), (8192, 108192, 4096, FIEMAP_EXTENT_DELALLOC)],
                              [(0, 100000, 12288, 0)], 12288, 12288) == [Extent(4096, 8192)]
    # holes on both sides are clean; a grown hole tail is dirty
    assert plan_dirty_extents([], [], 8192, 4096) == [Extent(4096, 4096)]


def _have_root_xfs():
    if os.geteuid() != 0:
        return "needs root (loop mount)"
    for tool in ("mkfs.xfs", "mount", "umount"):
        if not any(os.access(os.path.join(p, tool), os.X_OK) for p in os.environ.get("PATH", "").split(":") +
                   ["/sbin", "/usr/sbin"]):
            return "%s not installed" % tool
    return None


@pytest.fixture(scope="module")
def xfs():
    why = _have_root_xfs()
    if why:
        pytest.skip(why)
    top = tempfile.mkdtemp(prefix="xfs")
    img, mnt = os.path.join(top, "fs.img"), os.path.join(top, "mnt")
    os.mkdir(mnt)
    with open(img, "wb") as f:
        f.truncate(300 * MiB)   # sparse; XFS' minimum size
    mounted = False
    try:
        subprocess.check_call(["mkfs.xfs", "-q", "-m", "reflink=1", img])
        rc = subprocess.call(["mount", "-o", "loop", img, mnt])
        if rc != 0:
            pytest.skip("cannot loop-mount XFS here (mount exit %d)" % rc)
        mounted = True
        yield mnt
    finally:
        if mounted:
            subprocess.call(["umount", mnt])
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def image(xfs, request):
    path = os.path.join(xfs, "disk-%s.img" % request.node.name[-20:].replace("[", "_").replace("]", "_"))
    with open(path, "wb") as f:
        f.write(os.urandom(8 * MiB))
        os.fsync(f.fileno())
    yield path
    FiemapTracker(path).drop()
    os.unlink(path)


def pwrite(path, offset, data):
    fd = os.open(path, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        os.write(fd, data)
    finally:
        os.close(fd)


def covered(extents, off, length):
    return any(e.offset <= off and off + length <= e.end for e in extents)


def test_xfs_tracks_writes_since_mark(image):
    t = FiemapTracker(image)
    assert not t.trustworthy()
    with pytest.raises(ResyncError):
        t.dirty_extents()
    t.mark()
    assert t.trustworthy()
    assert t.dirty_extents() == []
    writes = [(0, 4096), (MiB + 100, 10), (5 * MiB, 65536), (8 * MiB - 4096, 4096)]
    for off, n in writes:
        pwrite(image, off, os.urandom(n))
    got = t.dirty_extents()
    for off, n in writes:
        assert covered(got, off, n), (off, n, got)
    # block-granular (XFS may round a CoW to a few blocks, never to the whole file)
    assert sum(e.length for e in got) <= 4 * 65536 + 3 * 131072, got
    # an untouched region stays clean
    assert not any(e.offset < 3 * MiB + 4096 and e.end > 3 * MiB for e in got)


def test_xfs_clear_keeps_writes_after_the_scan(image):
    t = FiemapTracker(image)
    t.mark()
    pwrite(image, 0, b"a" * 4096)
    first = t.dirty_extents()
    assert covered(first, 0, 4096)
    pwrite(image, 2 * MiB, b"b" * 4096)      # after the scan, before clear()
    t.clear()
    got = t.dirty_extents()
    assert covered(got, 2 * MiB, 4096)
    assert not covered(got, 0, 4096)
    t.clear()
    assert t.dirty_extents() == []


def test_xfs_growth_and_replacement(image):
    t = FiemapTracker(image)
    t.mark()
    with open(image, "ab") as f:
        f.write(b"\0" * 8192)
    got = t.dirty_extents()
    assert covered(got, 8 * MiB, 8192)
    assert t.trustworthy()
    tmp = image + ".new"
    shutil.copyfile(image, tmp)
    os.rename(tmp, image)                    # same name, another inode
    assert not t.trustworthy()


def test_no_reflink_is_a_clear_error(tmp_path):
    if os.geteuid() == 0 and subprocess.call(["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)],
                                             stdout=open(os.devnull, "w")) != 0:
        pytest.skip("findmnt missing")
    fstype = subprocess.check_output(["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)]).decode().strip()
    if fstype in ("xfs", "btrfs"):
        pytest.skip("tmp is on %s, which can reflink" % fstype)
    img = tmp_path / "disk.img"
    img.write_bytes(b"x" * 4096)
    with pytest.raises(ResyncError) as err:
        FiemapTracker(str(img)).mark()
    assert "expected a filesystem that can reflink" in str(err.value)
    assert not FiemapTracker(str(img)).trustworthy()
