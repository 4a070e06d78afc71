"""Resync into a local target: every mode on real image files.

Property tests over random images and random diffs: after the sync the
target is byte-identical, and the bytes that crossed the (in-process)
transport stay close to the diff.  Plus the safety rules: sizes, split
brain, inconsistent sources, generations after success.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.adapter.resync_util import copy, make_image, mutate, same
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ResyncError, SplitBrainError
from xen_remus_ext.model import Extent
from xen_remus_ext.resync import api, meta, plan

MiB = 1 << 20


@pytest.fixture
def pair(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 8 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    return src, dst


def differing_blocks(a, b, bs):
    """How many ``bs`` blocks of two files differ."""
    n = 0
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(bs), fb.read(bs)
            if not x and not y:
                return n
            n += x != y


def changed_blocks(changes, bs, size):
    blocks = set()
    for off, n in changes:
        blocks.update(range(off // bs, (off + n - 1) // bs + 1))
    return len(blocks)


@settings(max_examples=8, deadline=None)
@given(changes=st.integers(0, 12), seed=st.integers(0, 10 ** 6), bs=st.sampled_from([4096, 65536]),
       mode=st.sampled_from(["checksum", "full"]))
def test_property_identical_after_sync(tmp_path_factory, changes, seed, bs, mode):
    d = tmp_path_factory.mktemp("p")
    src = make_image(str(d / "src.img"), 4 * MiB)
    dst = copy(src, str(d / "dst.img"))
    diff = mutate(dst, changes, seed=seed)
    res = api.resync(src, dst, mode=mode, block_size=bs)
    assert same(src, dst)
    assert res.mode == mode
    if mode == "checksum":
        nblocks = changed_blocks(diff, bs, 4 * MiB)
        fine = changed_blocks(diff, 4096, 4 * MiB)     # 64 KiB blocks are refined to 4 KiB
        digest_traffic = (4 * MiB // bs) * 16 + 4 * 64 + 4096
        assert res.bytes_sent - res.digest_bytes <= fine * 4096 * 1.05 + nblocks * 64 + 2048   # + handshake
        assert res.digest_bytes <= digest_traffic + nblocks * ((bs // 4096) * 16 + 24) + 64
        # the refined blocks are read again (from the page cache) for their fine digests
        assert 2 * 4 * MiB <= res.bytes_read <= 2 * 4 * MiB + (nblocks * bs if bs > 4096 else 0)
    else:
        assert res.bytes_sent >= 4 * MiB


def test_checksum_sends_only_changed_blocks(pair):
    src, dst = pair
    diff = mutate(dst, 10, seed=7)
    nblocks = differing_blocks(src, dst, 4096)          # (a 1-byte write may rewrite the same byte)
    events = []
    res = api.resync(src, dst, mode="checksum", events=events.append)
    assert same(src, dst)
    assert res.extents <= nblocks
    sent_data = nblocks * 4096                            # differing 64 KiB blocks are refined to 4 KiB
    assert sent_data <= res.bytes_sent - res.digest_bytes <= sent_data * 1.05 + 8192
    assert res.digest_bytes <= 128 * (16 + 12 + 8) + changed_blocks(diff, 65536, 8 * MiB) * (16 * 16 + 24) + 4096
    assert events[0]["event"] == "start" and events[0]["relation"] == "target-new"
    assert events[-1]["result"] == "ok" and events[-1]["bytes_sent"] == res.bytes_sent
    # the target now carries the source's generation
    assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL
    assert meta.load(dst).consistent


def synced(src, dst):
    """``dst`` holds ``src``'s generation (as after an earlier resync): tracked mode may run."""
    meta.mark_synced(dst, meta.ensure(src, os.path.getsize(src)))


def test_tracked_sends_exactly_the_extents(pair):
    src, dst = pair
    synced(src, dst)
    diff = mutate(dst, 6, seed=3)
    extents = [Extent(o, n) for o, n in diff]
    res = api.resync(src, dst, mode="tracked", extents=extents)
    assert same(src, dst)
    want = plan.total(plan.extents_to_intervals(extents, 8 * MiB))
    assert res.bytes_read == want          # no full read, no hashing
    assert want <= res.bytes_sent <= want + 4096


def test_tracked_with_wrong_list_leaves_difference_that_verify_finds(pair):
    src, dst = pair
    synced(src, dst)
    mutate(dst, 1, seed=11)
    api.resync(src, dst, mode="tracked", extents=[Extent(0, 4096)])
    v = api.verify(src, dst)
    assert not v.identical and v.differing
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst, mode="tracked", extents=[Extent(0, 4096)], verify=True)
    assert "verify" in str(ei.value)
    assert meta.load(dst).consistent is False      # a failed verify leaves it inconsistent
    res = api.resync(src, dst, mode="checksum", verify=True)
    assert res.verified and same(src, dst) and meta.load(dst).consistent


class _Tracker(object):
    name = "test"

    def __init__(self, extents, trust):
        self.extents, self.trust = extents, trust

    def trustworthy(self):
        return self.trust

    def dirty_extents(self):
        return list(self.extents)


def test_auto_uses_a_trustworthy_tracker_only_on_the_right_lineage(pair):
    src, dst = pair
    m = meta.ensure(src, 8 * MiB)
    meta.mark_synced(dst, m)
    meta.rotate(src)                              # src took writes dst did not see
    diff = mutate(src, 3, seed=5)
    tracker = _Tracker([Extent(o, n) for o, n in diff], True)
    res = api.resync(src, dst, tracker=tracker)
    assert res.mode == "tracked" and same(src, dst)
    tracker.trust = False
    mutate(dst, 1, seed=2)
    meta.mark_inconsistent(dst)
    res = api.resync(src, dst, tracker=tracker)
    assert res.mode == "checksum" and same(src, dst)


def test_full_mode_punches_holes_for_zero_blocks(tmp_path):
    src = str(tmp_path / "src.img")
    with open(src, "wb") as f:
        f.truncate(16 * MiB)
        f.seek(3 * MiB)
        f.write(os.urandom(MiB))
    dst = make_image(str(tmp_path / "dst.img"), 16 * MiB)   # all data, no holes
    res = api.resync(src, dst, mode="full")
    assert same(src, dst)
    assert res.bytes_read <= 2 * MiB                      # the source's holes are not even read
    assert res.bytes_sent < 2 * MiB                       # zero runs cross as ZERO records
    assert os.stat(dst).st_blocks * 512 <= 2 * MiB        # and stay holes on the target


def test_full_mode_written_zeros_and_tracked_extents_in_holes(tmp_path):
    src = str(tmp_path / "src.img")
    with open(src, "wb") as f:                            # zeros written out: no holes to skip
        f.write(b"\0" * (4 * MiB))
        f.write(os.urandom(MiB))
        f.write(b"\0" * (3 * MiB))
    dst = make_image(str(tmp_path / "dst.img"), 8 * MiB)
    res = api.resync(src, dst, mode="full")
    assert same(src, dst) and res.bytes_read == 8 * MiB and res.bytes_sent < 2 * MiB
    assert os.stat(dst).st_blocks * 512 <= 2 * MiB
    sparse = str(tmp_path / "sparse.img")      # src's content, as a sparse file, 100 bytes changed
    with open(src, "rb") as f:
        f.seek(4 * MiB)
        chunk = os.urandom(100) + f.read(MiB)[100:]
    with open(sparse, "wb") as f:
        f.truncate(8 * MiB)
        f.seek(4 * MiB)
        f.write(chunk)
    with open(dst, "r+b") as f:
        f.seek(MiB)
        f.write(b"x" * 5000)
    meta.save(meta.load(dst)._replace(disk=os.path.realpath(sparse)))
    meta.rotate(sparse)                        # sparse took writes since dst's generation
    res = api.resync(sparse, dst, mode="tracked", extents=[Extent(MiB, 5000), Extent(4 * MiB, 100)])
    assert res.bytes_read == 100 and same(sparse, dst)


def test_size_mismatch_is_refused_untouched(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 2 * MiB)
    dst = make_image(str(tmp_path / "dst.img"), 3 * MiB)
    before = open(dst, "rb").read()
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst)
    assert "sizes differ" in str(ei.value) and str(2 * MiB) in str(ei.value)
    assert open(dst, "rb").read() == before and meta.load(dst) is None


def test_split_brain_refused_unless_discard_target(pair):
    src, dst = pair
    m = meta.ensure(src, 8 * MiB)
    meta.mark_synced(dst, m)
    meta.rotate(src)
    meta.rotate(dst)
    mutate(dst, 2, seed=9)
    before = open(dst, "rb").read()
    with pytest.raises(SplitBrainError) as ei:
        api.resync(src, dst)
    assert "split-brain" in str(ei.value) and "--discard-target" in str(ei.value)
    assert open(dst, "rb").read() == before and meta.load(dst).consistent
    res = api.resync(src, dst, discard_target=True)
    assert same(src, dst) and res.mode == "checksum"
    assert meta.compare(meta.load(src), meta.load(dst)) == meta.IDENTICAL


def test_target_ahead_refused(pair):
    src, dst = pair
    m = meta.ensure(src, 8 * MiB)
    meta.mark_synced(dst, m)
    meta.rotate(dst)                          # dst took writes src never saw
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst)
    assert "target-ahead" in str(ei.value)


def test_inconsistent_source_refused(pair):
    src, dst = pair
    meta.mark_inconsistent(src)
    with pytest.raises(ResyncError) as ei:
        api.resync(src, dst)
    assert "inconsistent" in str(ei.value)


def test_second_concurrent_writer_is_refused(pair):
    from xen_remus_ext.resync.blockio import BlockFile
    src, dst = pair
    mutate(dst, 1)
    with BlockFile(dst, write=True, exclusive=True):
        with pytest.raises(ResyncError) as ei:
            api.resync(src, dst)
        assert "another resync" in str(ei.value)
    api.resync(src, dst)
    assert same(src, dst)


def test_rate_limit_paces_reads(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    t0 = time.time()
    api.verify(src, dst, rate=4 * MiB)            # 1 MiB burst, then 3 MiB at 4 MiB/s
    assert time.time() - t0 >= 0.7
    t0 = time.time()
    api.resync(src, dst, mode="full")
    free = time.time() - t0
    t0 = time.time()
    api.resync(src, dst, mode="full", rate=4 * MiB)
    assert time.time() - t0 >= max(0.7, free + 0.5)


def test_verify_strong_digest(pair):
    src, dst = pair
    diff = mutate(dst, 2, seed=1)
    v = api.verify(src, dst, strong=True)
    assert not v.identical
    got = plan.normalize((e.offset, e.end) for e in v.differing)
    assert plan.subtract(plan.align_out(diff, 65536, 8 * MiB), got) == []


def test_cli_json_stream_and_exit_codes(pair, capsys):
    src, dst = pair
    mutate(dst, 3, seed=4)
    assert cli.main(["verify", src, dst, "--json"]) == 1
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert lines[-1]["result"] == "differ" and lines[-1]["identical"] is False
    assert cli.main(["resync", src, dst, "--json", "--rate", "1G"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    last = lines[-1]
    assert last["result"] == "ok" and last["mode"] == "checksum"
    assert set(["bytes_read", "bytes_sent", "extents", "seconds"]) <= set(last)
    assert any(x.get("event") == "progress" for x in lines)
    assert cli.main(["verify", src, dst]) == 0
    dirty = os.path.join(os.path.dirname(src), "dirty.txt")
    with open(dirty, "w") as f:
        f.write("0 4096\n")
    with open(dst, "r+b") as f:
        f.write(b"x" * 4096)
    assert cli.main(["resync", src, dst, "--dirty", dirty, "--json"]) == 0
    last = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert last["mode"] == "tracked" and last["bytes_read"] == 4096
    assert same(src, dst)
    # errors: a clear line, exit 1, and a JSON error object as the last line
    assert cli.main(["resync", src, dst + ".missing", "--json"]) == 1
    out = capsys.readouterr()
    assert json.loads(out.out.splitlines()[-1])["result"] == "error"
    assert "Traceback" not in out.err
