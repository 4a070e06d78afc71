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
