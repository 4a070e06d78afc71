"""The blktap2 log driver's export records, read in the dom0's native layout."""
from __future__ import absolute_import, division, print_function


def test_log_driver_record_is_the_native_struct():
    """``struct disk_range {u64 sector; u32 count;}`` as the dom0's compiler
    lays it out: 16 bytes on x86_64, 12 where a u64 is 4-byte aligned."""
    import ctypes
    import struct

    from xen_remus_ext.trackers import blktap2_log

    class DiskRange(ctypes.Structure):
        _fields_ = [("sector", ctypes.c_uint64), ("count", ctypes.c_uint32)]

    assert blktap2_log.RANGE.size == ctypes.sizeof(DiskRange)
    raw = bytes(bytearray(DiskRange(123456789, 8)))
    assert blktap2_log.RANGE.unpack(raw) == (123456789, 8)
    assert struct.calcsize("=QI4x") == 16      # the old fixed layout: right only on 64-bit
