"""The scanner of xl's migration stream and its checkpoint facts, on streams
built per Xen's specs, fed whole, byte by byte and in random splits."""
from __future__ import absolute_import, division, print_function

import random
import struct

import pytest

from xen_remus_ext.replication import synth as X
from xen_remus_ext.errors import StreamFormatError
from xen_remus_ext.replication import stream as S


def scan(data, sizes):
    sc, tr = S.StreamScanner(), S.CheckpointTracker()
    elements, facts, pos = [], [], 0
    for n in sizes:
        els = sc.feed(data[pos:pos + n])
        pos += n
        elements += els
        facts += tr.facts(els)
    assert pos == len(data)
    return sc, tr, elements, facts


def splits(total, rng, hi):
    out = []
    while total:
        n = min(total, rng.randint(1, hi))
        out.append(n)
        total -= n
    return out


def expected_facts(marks):
    out = []
    for n, (tsc, _libxc, end) in enumerate(marks):
        out += [S.Fact(S.SUSPENDED, n, tsc), S.Fact(S.COMMIT, n, end)]
    return out


def test_remus_stream_whole_gives_each_suspend_point_and_commit():
    data, marks = X.remus_stream(4)
    sc, tr, elements, facts = scan(data, [len(data)])
    assert facts == expected_facts(marks)
    assert sc.guest_type == S.GUEST_PV and sc.libxc_version == 3
    assert sc.offset == len(data) and not sc.done
    names = [e.name() for e in elements]
    assert names[:4] == ["xl-header", "libxl-header", "libxl LIBXC_CONTEXT", "libxc-image-header"]
    assert names.count("libxl CHECKPOINT_END") == 4 and names.count("libxc CHECKPOINT") == 4


@pytest.mark.parametrize("seed,hi", [(1, 1), (2, 7), (3, 13), (4, 700), (5, 5000), (6, 70000)])
def test_records_split_across_reads_give_the_same_facts(seed, hi):
    data, marks = X.remus_stream(3, pages_per_checkpoint=3)
    rng = random.Random(seed)
    if hi == 1:
        sizes = [1] * len(data)
    else:
        sizes = splits(len(data), rng, hi)
    _sc, _tr, _els, facts = scan(data, sizes)
    assert facts == expected_facts(marks)


def test_want_never_crosses_an_element_end():
    # a relay reading want() bytes at a time stops exactly at each suspend point
    data, marks = X.remus_stream(3)
    sc, tr = S.StreamScanner(), S.CheckpointTracker()
    pos, stops = 0, []
    while pos < len(data):
        n = min(sc.want(), 5000)
        assert n > 0
        for f in tr.facts(sc.feed(data[pos:pos + n])):
            pos_after = pos + n
            assert f.offset == pos_after, "a fact must end the chunk that completes it"
            stops.append((f.kind, pos_after))
        pos += n
    assert [p for k, p in stops if k == S.SUSPENDED] == [m[0] for m in marks]


def test_tail_after_suspend_is_longer_than_a_one_page_pipe():
    data, marks = X.remus_stream(2, pages_per_checkpoint=0)
    sc, tr = S.StreamScanner(), S.CheckpointTracker()
    tails = []
    for el in sc.feed(data):
        tr.facts([el])
        if el.kind == S.LIBXC_RECORD and el.rtype == S.LIBXC_CHECKPOINT:
            tails.append(tr.tail_after_suspend())
    assert tails == [m[1] - m[0] for m in marks]
    assert min(tails) > 4096


def test_plain_migration_ends_with_end_records():
    data = (X.xl_header() + X.libxl_header() + X.rec(S.LIBXL_LIBXC_CONTEXT) + X.libxc_headers(2)
            + X.page_data([1, 2]) + X.checkpoint_tail()[:-8] + X.rec(S.LIBXC_END) + X.rec(S.LIBXL_END))
    sc, _tr, _els, facts = scan(data, [len(data)])
    assert sc.done and sc.want() == 0
    assert [f.kind for f in facts] == [S.SUSPENDED, S.END]
    with pytest.raises(StreamFormatError, match="after libxl's END"):
        sc.feed(b"x")


def test_a_truncated_stream_reports_only_complete_checkpoints():
    data, marks = X.remus_stream(3)
    cut_at = marks[2][2] - 3            # inside the last CHECKPOINT_END
    _sc, _tr, _els, facts = scan(data[:cut_at], [cut_at])
    assert [f for f in facts if f.kind == S.COMMIT] == [S.Fact(S.COMMIT, 0, marks[0][2]),
                                                        S.Fact(S.COMMIT, 1, marks[1][2])]


@pytest.mark.parametrize("mutate,message", [
    (lambda d: b"Xen saved domain, xm format\n \0 \r" + d[32:], "not an xl migration stream"),
    (lambda d: d[:32] + struct.pack("<I", 0x04030201) + d[36:], "byte order"),
    (lambda d: d[:36] + struct.pack("<I", 1) + d[40:], "mandatory flags 0x1"),       # a legacy stream
    (lambda d: d[:36] + struct.pack("<I", 2 | 8) + d[40:], "mandatory flags 0xa"),   # an unknown flag
])
def test_bad_xl_header_names_the_offset(mutate, message):
    data, _ = X.remus_stream(1)
    with pytest.raises(StreamFormatError, match="offset 0: .*" + message):
        S.StreamScanner().feed(mutate(data))


def test_bad_libxl_and_libxc_headers():
    head = X.xl_header()
    with pytest.raises(StreamFormatError, match="offset %d: libxl stream version 3" % len(head)):
        S.StreamScanner().feed(head + struct.pack(">QII", S.LIBXL_IDENT, 3, 0))
    body = head + X.libxl_header() + X.rec(S.LIBXL_LIBXC_CONTEXT)
    with pytest.raises(StreamFormatError, match="offset %d: libxc image header" % len(body)):
        S.StreamScanner().feed(body + b"\0" * 24)
    with pytest.raises(StreamFormatError, match="unknown libxl record type 0x7"):
        S.StreamScanner().feed(head + X.libxl_header() + X.rec(7))
    with pytest.raises(StreamFormatError, match="length .* over"):
        S.StreamScanner().feed(body + X.libxc_headers() + struct.pack("<II", 1, (128 << 20) + 1))


def test_hvm_guest_is_refused_by_the_tracker():
    data = X.xl_header() + X.libxl_header() + X.rec(S.LIBXL_LIBXC_CONTEXT) + X.libxc_headers(3, S.GUEST_HVM)
    with pytest.raises(StreamFormatError, match="HVM guest"):
        scan(data, [len(data)])


def test_checkpoint_without_suspend_point_fails_closed():
    data = (X.xl_header() + X.libxl_header() + X.rec(S.LIBXL_LIBXC_CONTEXT) + X.libxc_headers()
            + X.page_data([1]) + X.rec(S.LIBXC_CHECKPOINT))
    with pytest.raises(StreamFormatError, match="checkpoint 0 ended with no X86_TSC_INFO"):
        scan(data, [len(data)])


def test_checkpoint_end_outside_a_checkpoint():
    data = X.xl_header() + X.libxl_header() + X.rec(S.LIBXL_CHECKPOINT_END)
    with pytest.raises(StreamFormatError, match="CHECKPOINT_END outside a checkpoint"):
        S.StreamScanner().feed(data)


def test_pure_modules_import_no_io():
    import xen_remus_ext.replication.epochs as E
    import xen_remus_ext.replication.wire as W
    for mod in (S, W, E):
        src = open(mod.__file__.replace(".pyc", ".py")).read()
        for name in ("socket", "subprocess", "select", "threading"):
            assert "import %s" % name not in src, (mod.__name__, name)
