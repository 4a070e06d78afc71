"""A torn or corrupted resume journal must never make a resync skip work.

Found by the chaos campaign (fault ``journal-corrupt``, "claims-all"): the
receiver's journal had no integrity check, so a record corrupted into valid
JSON naming ranges never written made the rerun skip them and mark the
target consistent with the source's generation while megabytes differed.
"""
from __future__ import absolute_import, division, print_function

import json
import os

import pytest

from tests.adapter.resync_util import copy, make_image, mutate, same
from tests.chaos.faults.resync_faults import bytes_differing, false_consistent
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync import journal as jn

SIZE = 2 << 20


@pytest.fixture
def pair(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    src = make_image(str(tmp_path / "src.img"), SIZE)
    dst = copy(src, str(tmp_path / "dst.img"))
    m = meta.ensure(src, SIZE, role="primary")
    meta.mark_synced(dst, m)
    meta.rotate(src)
    mutate(src, 30, seed=9)
    assert bytes_differing(src, dst) > 0
    return src, dst


def _journal(src, dst, done, mode="full"):
    j = jn.Journal(dst, SIZE, meta.load(src).current, mode, 65536, done)
    j.save()
    meta.mark_inconsistent(dst, SIZE)
    return jn.journal_path(dst)


def _rewrite(path, fn):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(fn(data))


def test_an_intact_journal_is_still_trusted(pair):
    src, dst = pair
    path = _journal(src, dst, [(0, 65536)])
    j = jn.Journal.load(dst)
    assert j is not None and j.done == [(0, 65536)]
    assert os.path.exists(path)


@pytest.mark.parametrize("how", ["claims-all", "bitflip-digit", "torn", "not-an-object", "sum-removed"])
def test_a_corrupted_journal_is_ignored_and_the_rerun_is_exact(pair, how):
    src, dst = pair
    path = _journal(src, dst, [(0, 65536)])

    def claims_all(data):
        d = json.loads(data.decode("utf-8"))
        d["done"] = [[0, SIZE]]
        return json.dumps(d, sort_keys=True).encode("utf-8")

    def bitflip_digit(data):
        i = data.index(b"65536")
        return data[:i] + b"75536" + data[i + 5:]

    def sum_removed(data):
        d = json.loads(data.decode("utf-8"))
        d.pop("sum")
        d["done"] = [[0, SIZE]]
        return json.dumps(d).encode("utf-8")
    fn = {"claims-all": claims_all, "bitflip-digit": bitflip_digit, "torn": lambda d: d[:len(d) // 2],
          "not-an-object": lambda d: b"[1, 2]", "sum-removed": sum_removed}[how]
    _rewrite(path, fn)
    assert jn.Journal.load(dst) is None
    api.resync(src, dst, mode="full")
    assert bytes_differing(src, dst) == 0 and same(src, dst)
    assert false_consistent(src, dst) == 0
    md, ms = meta.load(dst), meta.load(src)
    assert md.consistent and md.current == ms.current
