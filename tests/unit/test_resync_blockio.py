"""Positioned I/O helpers on real temp files: zero checks, holes, zeroing, locks."""
from __future__ import absolute_import, division, print_function

import os

import pytest

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.resync.blockio import BlockFile, is_zero

MiB = 1 << 20


@pytest.mark.parametrize("data,zero", [
    (b"", True), (b"\0" * 100, True), (b"\0" * 50 + b"\1" + b"\0" * 49, False),
    (b"\0" * 99 + b"\1", False), (b"\1" + b"\0" * 99, False), (b"\0" * MiB, True),
    (b"\0" * (MiB - 1) + b"\7", False),
])
def test_is_zero_bytes_and_memoryviews(data, zero):
    assert is_zero(data) is zero
    assert is_zero(memoryview(data)) is zero
    padded = memoryview(b"\1" + data + b"\1")[1:-1]
    assert is_zero(padded) is zero


def test_holes_are_found(tmp_path):
    path = str(tmp_path / "sparse.img")
    with open(path, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(4 * MiB)
        f.write(b"x" * MiB)
    with BlockFile(path) as f:
        assert f.next_data(0) == 4 * MiB
        assert f.next_hole(4 * MiB) == 5 * MiB
        assert f.next_data(5 * MiB) == 8 * MiB       # only a hole follows
        assert f.read_at(4 * MiB - 2, 4) == b"\0\0xx"
        assert f.read_at(8 * MiB - 2, 10) == b"\0\0"  # short only at the end


def test_write_zero_range_and_sync(tmp_path):
    path = str(tmp_path / "d.img")
    with open(path, "wb") as f:
        f.write(os.urandom(4 * MiB))
    with BlockFile(path, write=True, exclusive=True) as f:
        f.write_at(10, memoryview(b"hello"))
        f.zero_range(MiB, 2 * MiB)
        f.sync()
        assert f.bytes_written == 5
    with open(path, "rb") as f:
        data = f.read()
    assert data[10:15] == b"hello" and data[MiB:3 * MiB] == b"\0" * (2 * MiB)
    assert data[3 * MiB:3 * MiB + 16] != b"\0" * 16
    assert os.stat(path).st_blocks * 512 <= 2 * MiB + 64 * 1024    # a hole, not written zeros


def test_refusals(tmp_path):
    with pytest.raises(ResyncError) as ei:
        BlockFile(str(tmp_path / "missing"))
    assert "missing" in str(ei.value)
    with pytest.raises(ResyncError) as ei:
        BlockFile(str(tmp_path))
    assert "expected an image file or a block device" in str(ei.value)
    path = str(tmp_path / "x.img")
    open(path, "wb").close()
    with BlockFile(path, write=True, exclusive=True):
        with pytest.raises(ResyncError) as ei:
            BlockFile(path, write=True, exclusive=True)
        assert "another resync" in str(ei.value)
