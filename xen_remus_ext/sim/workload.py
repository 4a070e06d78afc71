"""The sim domain's workload: numbered, checksummed records on its disk.

Record ``n`` is one 512-byte sector at ``DATA_START + (n % slots) * 512``:
magic ``XRSR``, uint64 ``n``, uint32 seed (big-endian), filler derived from
(seed, n), and a SHA-256 of everything before it.  Because the content of
record ``n`` is a function of (seed, n), a checker that knows how far the
writes were acknowledged can say exactly which acknowledged writes a disk
lacks.  The first ``DATA_START`` bytes are never written by the workload.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import os
import struct

from xen_remus_ext.errors import ValidationError

RECORD = 512
DATA_START = 4096
MAGIC = b"XRSR"
_HEAD = struct.Struct(">4sQI")
_DIGEST = 32


def slots_for(size):
    """How many records fit on a disk of ``size`` bytes."""
    n = (size - DATA_START) // RECORD
    if n <= 0:
        raise ValidationError("sim disk: expected more than %d bytes, got %d" % (DATA_START, size))
    return n


def offset_of(n, slots):
    return DATA_START + (n % slots) * RECORD


def make_record(seed, n):
    # type: (int, int) -> bytes
    head = _HEAD.pack(MAGIC, n, seed & 0xffffffff)
    fill_len = RECORD - len(head) - _DIGEST
    block = hashlib.sha256(head).digest()
    fill = (block * (fill_len // len(block) + 1))[:fill_len]
    body = head + fill
    return body + hashlib.sha256(body).digest()


def parse_record(data):
    """:returns: ``(n, seed)`` of a valid record, or None (blank or corrupt)."""
    if len(data) != RECORD or data[:4] != MAGIC:
        return None
    body, digest = data[:-_DIGEST], data[-_DIGEST:]
    if hashlib.sha256(body).digest() != digest:
        return None
    _, n, seed = _HEAD.unpack(body[:_HEAD.size])
    return n, seed


def check_records(read_at, size, seed, acked):
    """Find acknowledged records a disk lacks.

    :param read_at: ``read_at(offset, length) -> bytes`` on the disk.
    :param acked: records ``0 .. acked-1`` were acknowledged.
    :returns: dict ``checked``, ``missing`` (count), ``first_missing``
        (record numbers, up to 10), ``highest`` (highest valid record seen).
    A slot holding a later record of the same seed (the disk wrapped) counts
    as present: the earlier record was legitimately overwritten.
    """
    slots = slots_for(size)
    missing = []
    nmissing = 0
    highest = -1
    lo = max(0, acked - slots)
    for n in range(lo, acked):
        got = parse_record(read_at(offset_of(n, slots), RECORD))
        if got is not None and got[1] == (seed & 0xffffffff):
            highest = max(highest, got[0])
            if got[0] == n or (got[0] > n and (got[0] - n) % slots == 0):
                continue
        nmissing += 1
        if len(missing) < 10:
            missing.append(n)
    return {"checked": acked - lo, "missing": nmissing, "first_missing": missing,
            "highest": highest}


def check_disk_file(path, seed, acked):
    """:func:`check_records` on an image file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        def read_at(off, length):
            f.seek(off)
            return f.read(length).ljust(length, b"\0")
        return check_records(read_at, size, seed, acked)
