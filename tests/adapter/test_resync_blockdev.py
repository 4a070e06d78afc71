"""Block devices: loop devices as source and target, exclusive open, zeroing.

Needs root and losetup; each loop device is detached by its own path.
"""
from __future__ import absolute_import, division, print_function

import os
import subprocess

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync.blockio import BlockFile

MiB = 1 << 20


def _can_loop():
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.call(["losetup", "--version"], stdout=subprocess.PIPE, stderr=subprocess.PIPE) == 0
    except OSError:
        return False


pytestmark = pytest.mark.skipif(not _can_loop(), reason="needs root and losetup")


@pytest.fixture
def loop(tmp_path):
    made = []

    def attach(path):
        dev = subprocess.check_output(["losetup", "--find", "--show", path]).decode().strip()
        made.append(dev)
        return dev
    yield attach
    for dev in made:
        subprocess.call(["losetup", "-d", dev])


def test_resync_into_and_from_loop_devices(tmp_path, loop):
    src = make_image(str(tmp_path / "src.img"), 8 * MiB)
    back = copy(src, str(tmp_path / "dst.img"))
    mutate(back, 10, seed=12)
    dev = loop(back)
    res = api.resync(src, dev, verify=True)
    assert res.verified
    os.system("sync")
    with open(dev, "rb") as d, open(src, "rb") as s:
        assert d.read() == s.read()
    # a block device as the source, a file as the target
    other = make_image(str(tmp_path / "other.img"), 8 * MiB)
    res = api.resync(dev, other, mode="full", discard_target=True)
    assert same(src, other)


def test_in_use_block_device_is_refused(tmp_path, loop):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    back = make_image(str(tmp_path / "dst.img"), 4 * MiB)
    dev = loop(back)
    before = open(back, "rb").read()
    holder = os.open(dev, os.O_RDONLY | os.O_EXCL)    # stands in for a running tapdisk or a mount
    try:
        with pytest.raises(ResyncError) as ei:
            api.resync(src, dev, mode="full")
        assert "in use" in str(ei.value)
    finally:
        os.close(holder)
    assert open(back, "rb").read() == before and meta.load(dev) is None


def test_zero_blocks_on_a_block_device(tmp_path, loop):
    src = str(tmp_path / "src.img")
    with open(src, "wb") as f:
        f.truncate(4 * MiB)
    back = make_image(str(tmp_path / "dst.img"), 4 * MiB)
    dev = loop(back)
    res = api.resync(src, dev, mode="full")
    assert res.bytes_sent < 64 * 1024
    with open(dev, "rb") as d:
        assert d.read() == b"\0" * (4 * MiB)


def _write_behind(back, offset, data):
    """Write the loop device's backing file directly: like blkback's bios,
    the write reaches the device without passing through dom0's cache of it."""
    fd = os.open(back, os.O_WRONLY)
    try:
        os.lseek(fd, offset, os.SEEK_SET)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_reads_of_a_block_device_see_writes_that_bypassed_its_cache(tmp_path, loop):
    back = make_image(str(tmp_path / "guest.img"), 4 * MiB)
    dev = loop(back)
    backend = os.open(dev, os.O_RDONLY)     # the guest's backend keeps the device (and its cache) alive
    try:
        with BlockFile(dev) as f:
            f.read_exactly(MiB, 4096)             # an earlier pass caches the page
        _write_behind(back, MiB, b"W" * 4096)
        with BlockFile(dev) as f:
            assert f.read_exactly(MiB, 4096) == b"W" * 4096
        _write_behind(back, 2 * MiB, b"P" * 4096)  # the prefetching reader too
        with BlockFile(dev) as f:
            f.read_exactly(2 * MiB, 4096)
        _write_behind(back, 2 * MiB, b"Q" * 4096)
        with BlockFile(dev) as f:
            f.will_need(2 * MiB, 4096)
            assert f.read_exactly(2 * MiB, 4096) == b"Q" * 4096
    finally:
        os.close(backend)


def test_a_resync_from_a_block_device_carries_writes_made_after_an_earlier_pass(tmp_path, loop):
    back = make_image(str(tmp_path / "guest.img"), 8 * MiB)
    target = copy(back, str(tmp_path / "copy.img"))
    dev = loop(back)
    backend = os.open(dev, os.O_RDONLY)
    try:
        api.resync(dev, target, mode="full", discard_target=True)     # the pre-copy reads every page
        for i in range(16):
            _write_behind(back, i * 512 * 1024 + 8192, os.urandom(4096))
        api.resync(dev, target, discard_target=True)                  # the final pass
        assert same(back, target)
    finally:
        os.close(backend)
