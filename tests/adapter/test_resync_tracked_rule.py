"""Tracked mode only into a target it can describe, enforced at both ends.

A dirty list covers the writes since one generation: into a new, unrelated
or half-written target it would leave old bytes behind and still mark the
copy consistent with the source's generation (a false "consistent").
"""
from __future__ import absolute_import, division, print_function

import os

import pytest

from tests.adapter.resync_util import copy, make_image, same, write_key
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.model import Extent
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync.sender import SenderSession
from xen_remus_ext.resync.transport import ResyncServer, connect

MiB = 1 << 20
SIZE = 8 * MiB


def differing_bytes(a, b):
    with open(a, "rb") as fa, open(b, "rb") as fb:
        x, y = fa.read(), fb.read()
    return sum(1 for i in range(0, len(x), 4096) if x[i:i + 4096] != y[i:i + 4096]) * 4096


@pytest.fixture
def src(tmp_path):
    return make_image(str(tmp_path / "src.img"), SIZE)


@pytest.fixture
def dirty(tmp_path):
    path = str(tmp_path / "d.txt")
    with open(path, "w") as f:
        f.write("0 1M\n")
    return path


def test_cli_tracked_into_a_new_target_is_refused(tmp_path, src, dirty, capsys):
    dst = str(tmp_path / "dst.img")
    with open(dst, "wb") as f:
        f.truncate(SIZE)                        # truncate -s 8M dst.img
    assert cli.main(["resync", src, dst, "--mode", "tracked", "--dirty", dirty]) == 1
    err = capsys.readouterr().err
    assert "tracked mode refused" in err and "no generation" in err
    assert meta.load(dst) is None               # nothing marked, nothing written
    assert open(dst, "rb").read() == b"\0" * SIZE


def test_tracked_after_a_killed_full_run_is_refused(tmp_path, src):
    dst = make_image(str(tmp_path / "dst.img"), SIZE)
    m = meta.ensure(src, SIZE)
    meta.mark_synced(dst, m)
    meta.mark_inconsistent(dst, SIZE)           # what a full run killed half way leaves
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst, mode="tracked", extents=[Extent(0, MiB)], discard_target=True)
    assert "inconsistent" in str(ei.value)
    assert meta.load(dst).consistent is False
    res = api.resync(src, dst, extents=[Extent(0, MiB)])        # auto: checksum, not tracked
    assert res.mode == "checksum" and same(src, dst)


def test_tracked_into_an_unrelated_target_is_refused_even_with_discard(tmp_path, src):
    dst = make_image(str(tmp_path / "dst.img"), SIZE)
    meta.ensure(dst, SIZE)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst, mode="tracked", extents=[Extent(0, MiB)], discard_target=True)
    assert "neither the source's" in str(ei.value)
    assert meta.load(dst).consistent


def test_tracked_from_the_bitmap_ancestor_runs(tmp_path, src):
    dst = copy(src, str(tmp_path / "dst.img"))
    meta.mark_synced(dst, meta.ensure(src, SIZE))
    meta.rotate(src)                            # src takes writes dst does not see
    with open(src, "r+b") as f:
        f.seek(3 * MiB)
        f.write(os.urandom(5000))
    res = api.resync(src, dst, mode="tracked", extents=[Extent(3 * MiB, 5000)])
    assert res.mode == "tracked" and same(src, dst)
    assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL


def test_the_receiver_refuses_it_too(tmp_path, src):
    """A sender that skips the check (an old or hostile one) meets the receiver's."""
    dst = str(tmp_path / "dst.img")
    with open(dst, "wb") as f:
        f.truncate(SIZE)
    key = write_key(str(tmp_path / "key"))
    srv = ResyncServer(("127.0.0.1", 0), key, {"d": dst}).start()
    try:
        conn = connect("tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key)
        try:
            sess = SenderSession(conn)
            sess.handshake()
            with pytest.raises(ResyncError) as ei:
                sess.run_phase("tracked", src, meta.ensure(src, SIZE), [(0, MiB)])
        finally:
            conn.close()
    finally:
        srv.stop()
    assert "tracked mode refused" in str(ei.value)
    assert meta.load(dst) is None and open(dst, "rb").read() == b"\0" * SIZE
