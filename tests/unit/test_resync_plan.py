"""Pure range arithmetic of the resync engine (xen_remus_ext.resync.plan)."""
from __future__ import absolute_import, division, print_function

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xen_remus_ext.errors import ConfigError, ValidationError
from xen_remus_ext.model import Extent
from xen_remus_ext.resync import plan

pairs = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 60)).map(lambda t: (t[0], t[0] + t[1])),
                 max_size=12)


def as_set(intervals):
    out = set()
    for s, e in intervals:
        out.update(range(s, e))
    return out


@settings(max_examples=150, deadline=None)
@given(pairs, pairs)
def test_subtract_and_normalize_match_set_semantics(a, b):
    got = plan.subtract(a, b)
    assert as_set(got) == as_set(a) - as_set(b)
    norm = plan.normalize(a)
    assert as_set(norm) == as_set(a)
    # sorted, disjoint, non-adjacent, non-empty
    for (_s1, e1), (s2, _e2) in zip(norm, norm[1:]):
        assert e1 < s2
    assert all(s < e for s, e in norm)


@settings(max_examples=100, deadline=None)
@given(pairs, st.sampled_from([7, 64, 100]))
def test_chunks_cover_exactly_and_align(a, chunk):
    norm = plan.normalize(a)
    pieces = list(plan.chunks(norm, chunk))
    assert as_set((o, o + n) for o, n in pieces) == as_set(norm)
    assert all(0 < n <= chunk for _, n in pieces)
    # no piece crosses a chunk boundary, so both ends cut the same way
    assert all(o // chunk == (o + n - 1) // chunk for o, n in pieces)


def test_runs():
    assert plan.runs([False, True, True, False, True]) == [(1, 2), (4, 1)]
    assert plan.runs([]) == []
    assert plan.runs([True] * 3) == [(0, 3)]


@pytest.mark.parametrize("text,value", [("4096", 4096), ("64K", 65536), ("50M", 50 << 20), ("1g", 1 << 30),
                                        ("0x1000", 4096), ("2MiB", 2 << 20), ("10b", 10)])
def test_parse_size(text, value):
    assert plan.parse_size(text) == value


@pytest.mark.parametrize("text", ["", "x", "-4", "12Q", "0xzz"])
def test_parse_size_rejects(text):
    with pytest.raises(ValidationError):
        plan.parse_size(text)


def test_parse_dirty_merges_and_validates():
    text = "# dirty list\n0 4096\n4096 4K   # adjacent\n0x100000, 0x10\n\n"
    assert plan.parse_dirty(text, 1 << 21, "d.txt") == [Extent(0, 8192), Extent(0x100000, 16)]
    with pytest.raises(ConfigError) as ei:
        plan.parse_dirty("0 4096\n10 20 30\n", 1 << 20, "d.txt")
    assert str(ei.value).startswith("d.txt:2: error:")
    with pytest.raises(ConfigError) as ei:
        plan.parse_dirty("1048000 4096\n", 1 << 20, "d.txt")
    assert "within the disk" in str(ei.value)
    assert plan.format_dirty([Extent(1, 2)]) == "1 2\n"


def test_extents_to_intervals_rejects_past_end():
    assert plan.extents_to_intervals([Extent(10, 5), (0, 10)], 100) == [(0, 15)]
    with pytest.raises(ValidationError):
        plan.extents_to_intervals([Extent(90, 20)], 100)


def test_align_out():
    assert plan.align_out([(5, 10), (4100, 4200)], 4096, 5000) == [(0, 5000)]
    assert plan.align_out([(5, 10)], 4096, 100000) == [(0, 4096)]


def test_intersect_and_covers():
    a = [(0, 10), (20, 30), (40, 50)]
    assert plan.intersect(a, [(5, 25), (45, 100)]) == [(5, 10), (20, 25), (45, 50)]
    assert plan.intersect(a, []) == [] and plan.intersect([], a) == []
    assert [o for o in (0, 9, 10, 19, 20, 29, 30, 49, 50) if plan.covers(a, o)] == [0, 9, 20, 29, 49]
    assert not plan.covers([], 0)


def test_merged_chunks_cut_each_list_as_alone():
    """The receiver digests only the finished ranges: the sender's pieces of
    them must be exactly the receiver's chunks, interleaved in offset order."""
    C = plan.CHUNK
    done = [(C // 2, 3 * C + 100)]
    rest = plan.subtract([(0, 5 * C)], done)
    merged = list(plan.merged_chunks(done, rest))
    assert [p for p in merged if plan.covers(done, p[0])] == list(plan.chunks(done))
    assert [p for p in merged if not plan.covers(done, p[0])] == list(plan.chunks(rest))
    assert [p[0] for p in merged] == sorted(p[0] for p in merged)
    assert sum(n for _, n in merged) == 5 * C
