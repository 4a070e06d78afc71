"""Sub-block precision for checksum and verify sessions (pure; no I/O).

A checksum session compares coarse blocks (``block_size``, 64 KiB by
default) so that the digest stream stays small.  A coarse block that
differs is then *refined*: the sender asks for the digests of its fine
blocks (``fine``, 4 KiB by default, the size filesystems write), and sends
only the fine blocks that differ.  The sender does not wait for the answer:
it keeps comparing the next chunks while REFINE requests are in flight,
and handles each FINE answer when it arrives (see docs/protocol.md).

Payloads (both version 2):

- ``REFINE`` (S->R): ``N x (u64 offset, u32 length)``, the coarse blocks of
  one chunk that differ, in ascending order;
- ``FINE`` (R->S): the same list, then, for each block in order, one digest
  per ``fine`` bytes of it (the last one may cover less).
"""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.compat import integer_types
from xen_remus_ext.errors import ProtocolError
from xen_remus_ext.resync import protocol as P

ENTRY = P.U64U32

#: the fine block size a sender asks for by default
FINE = 4096


def check_fine(fine, bs):
    """:raises ProtocolError: ``fine`` is not 0 (off) or a power of two in [4096, bs)."""
    if fine in (0, None):
        return
    if not isinstance(fine, integer_types) or isinstance(fine, bool) or fine < 4096 or fine >= bs or fine & (fine - 1):
        raise ProtocolError("START record: expected fine 0 or a power of two from 4096 to below the block "
                            "size %d, got %r" % (bs, fine))


def pack_request(blocks):
    """``[(offset, length), ...]`` -> a REFINE payload."""
    return b"".join(ENTRY.pack(off, n) for off, n in blocks)


def unpack_request(payload, size, bs):
    """A REFINE payload -> ``[(offset, length), ...]``.

    :raises ProtocolError: not a whole number of entries, a block longer
        than ``bs``, past ``size``, out of order, or more than one chunk's
        worth of bytes.
    """
    if not len(payload) or len(payload) % ENTRY.size:
        raise ProtocolError("REFINE record: expected a non-empty multiple of %d bytes, got %d"
                            % (ENTRY.size, len(payload)))
    out = []
    total = 0
    last_end = 0
    for i in range(0, len(payload), ENTRY.size):
        off, n = ENTRY.unpack_from(payload, i)
        if not 0 < n <= bs or off + n > size or off < last_end:
            raise ProtocolError("REFINE record: expected ascending blocks of 1 to %d bytes within %d bytes, "
                                "got %d+%d" % (bs, size, off, n))
        last_end = off + n
        total += n
        out.append((off, n))
    if total > P.MAX_DATA:
        raise ProtocolError("REFINE record: expected at most %d bytes of blocks, got %d" % (P.MAX_DATA, total))
    return out


def count(n, fine):
    """Number of fine digests of a block of ``n`` bytes."""
    return -(-n // fine)


def pack_answer(request_payload, digests):
    """The FINE payload answering ``request_payload`` (the REFINE bytes, echoed)."""
    return bytes(request_payload) + digests


def split_answer(payload, blocks, fine, dsize):
    """Check a FINE payload against the request it answers.

    :param blocks: the ``[(offset, length), ...]`` of that REFINE.
    :returns: the digest bytes (without the echoed list).
    :raises ProtocolError: it answers another request, or has the wrong length.
    """
    head = pack_request(blocks)
    want = len(head) + sum(count(n, fine) for _, n in blocks) * dsize
    if len(payload) != want or bytes(payload[:len(head)]) != head:
        first = ENTRY.unpack_from(payload)[0] if len(payload) >= ENTRY.size else None
        raise ProtocolError("FINE record: expected the answer to the request for %d block(s) from offset %d "
                            "(%d bytes), got %d bytes starting at offset %s"
                            % (len(blocks), blocks[0][0], want, len(payload), first))
    return bytes(payload[len(head):])

