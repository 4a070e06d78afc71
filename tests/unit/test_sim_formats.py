"""The simulator's pure parts: block-remus framing, workload records, the
dirty map and the block-remus flush order."""
from __future__ import absolute_import, division, print_function

import socket

import pytest

from xen_remus_ext.errors import ProtocolError
from xen_remus_ext.sim import wire, workload
from xen_remus_ext.sim.disk import DirtyMap
from xen_remus_ext.sim.remus import in_order_runs


def test_wreq_is_op_header_data_in_host_order():
    data = b"\x01" * 1024
    msg = wire.format_wreq(10, data)
    assert msg[:4] == b"wreq"
    # uint32 sector count then uint64 start sector, packed, native order
    assert msg[4:16] == wire.WREQ_HEADER.pack(2, 10)
    assert len(msg) == 4 + 12 + 1024


def test_wreq_rejects_partial_sector_and_oversize():
    with pytest.raises(ProtocolError):
        wire.format_wreq(0, b"x" * 100)
    with pytest.raises(ProtocolError):
        wire.format_wreq(0, b"x" * 8192)


def test_read_message_round_trip_over_a_socket():
    a, b = socket.socketpair()
    try:
        a.sendall(wire.format_wreq(7, b"\xaa" * 512) + wire.format_mchk({"next": 3})
                  + wire.OP_CREQ + wire.OP_DONE)
        assert wire.read_message(b) == (b"wreq", (7, b"\xaa" * 512))
        assert wire.read_message(b) == (b"mchk", {"next": 3})
        assert wire.read_message(b) == (b"creq", None)
        assert wire.read_message(b) == (b"done", None)
        a.sendall(b"zzzz")
        with pytest.raises(ProtocolError):
            wire.read_message(b)
        a.close()
        with pytest.raises(EOFError):
            wire.read_message(b)
    finally:
        b.close()


def test_backup_rejects_wreq_larger_than_4096():
    a, b = socket.socketpair()
    try:
        a.sendall(b"wreq" + wire.WREQ_HEADER.pack(16, 0))
        with pytest.raises(ProtocolError):
            wire.read_message(b)
    finally:
        a.close()
        b.close()


def test_record_round_trip_and_corruption():
    rec = workload.make_record(5, 1234)
    assert len(rec) == workload.RECORD
    assert workload.parse_record(rec) == (1234, 5)
    bad = rec[:100] + b"\x00" + rec[101:]
    assert workload.parse_record(bad) is None
    assert workload.parse_record(b"\0" * 512) is None
    assert workload.make_record(5, 1234) != workload.make_record(6, 1234)


def test_check_records_counts_missing_and_accepts_wrapped(tmp_path):
    size = workload.DATA_START + 4 * workload.RECORD    # 4 slots
    path = tmp_path / "d.img"
    with open(str(path), "wb") as f:
        f.truncate(size)
        for n in (0, 1, 3, 4):   # record 4 overwrites slot 0; record 2 never written
            f.seek(workload.offset_of(n, 4))
            f.write(workload.make_record(9, n))
    res = workload.check_disk_file(str(path), 9, 5)
    assert res["checked"] == 4           # records 1..4 can still be on disk
    assert res["missing"] == 1 and res["first_missing"] == [2]
    assert workload.check_disk_file(str(path), 10, 2)["missing"] == 2   # other seed


def test_dirty_map_merges_and_clear_keeps_later_writes():
    m = DirtyMap()
    m.note(0, 512, 1)
    m.note(4096 + 10, 100, 2)
    m.note(3 * 4096, 4096, 3)
    assert m.extents(1 << 20, 4) == [(0, 8192), (3 * 4096, 4096)]
    m.note(3 * 4096, 512, 5)            # rewritten after the report
    m.clear()
    assert m.extents(1 << 20, 6) == [(3 * 4096, 4096)]
    assert m.extents(3 * 4096 + 100, 7) == [(3 * 4096, 100)]   # clipped to the disk


def test_backup_flush_keeps_arrival_order_and_merges_continuations():
    w = [(0, b"a" * 512), (1, b"b" * 512), (8, b"c" * 1024), (0, b"z" * 512)]
    runs = in_order_runs(w)
    assert runs == [(0, b"a" * 512 + b"b" * 512), (4096, b"c" * 1024), (0, b"z" * 512)]
    disk = bytearray(8192)
    for off, data in runs:
        disk[off:off + len(data)] = data
    assert bytes(disk[:512]) == b"z" * 512          # the later write to sector 0 wins
