"""Synthetic xl remus migration streams, as Xen 4.17 writes them (pure).

For the tests and the benchmark: no Xen needed to exercise the scanner and
the relays.

Layouts from docs/specs/libxl-migration-stream.pandoc and
libxc-migration-stream.pandoc: xl's save-file header, the libxl v2 header and
records, libxc's image and domain headers and records, each record padded to
8 bytes.  Sizes of the PV records follow a 64-bit PV guest with one vCPU.
"""
from __future__ import absolute_import, division, print_function

import struct

from xen_remus_ext.replication import stream as S


def pad(body):
    return body + b"\0" * ((8 - len(body) % 8) % 8)


def xl_header(config=b'{"c_info": {"name": "guest"}}'):
    opt = struct.pack("<I", len(config)) + config
    return S.XL_MAGIC + struct.pack("<IIII", S.XL_BYTEORDER, 1 | 2, 0, len(opt)) + opt


def libxl_header():
    return struct.pack(">QII", S.LIBXL_IDENT, 2, 0)


def rec(rtype, body=b""):
    return struct.pack("<II", rtype, len(body)) + pad(body)


def libxc_headers(version=3, guest=S.GUEST_PV):
    return (struct.pack(">QIIHHI", S.LIBXC_MARKER, S.LIBXC_ID, version, 0, 0, 0)
            + struct.pack("<IHHII", guest, 12, 0, 4, 17))


def page_data(pfns):
    body = struct.pack("<II", len(pfns), 0) + b"".join(struct.pack("<Q", p) for p in pfns)
    body += b"".join(bytes(bytearray([p & 0xFF])) * 4096 for p in pfns)
    return rec(S.LIBXC_PAGE_DATA, body)


def checkpoint_tail():
    """What libxc writes after the suspend: TSC, shared info, vCPU state, CHECKPOINT."""
    return (rec(S.LIBXC_X86_TSC_INFO, b"\1" * 24)
            + rec(S.LIBXC_SHARED_INFO, b"\2" * 4096)
            + rec(S.LIBXC_X86_PV_VCPU_BASIC, b"\3" * 5176)
            + rec(0x5, b"\4" * 88) + rec(0x6, b"\5" * 840) + rec(0xC, b"\6" * 72)
            + rec(S.LIBXC_CHECKPOINT))


def remus_stream(checkpoints, pages_per_checkpoint=2, end=False):
    """(bytes, marks): the stream of ``checkpoints`` checkpoints (the first
    one ends the live pre-copy); marks[n] = (offset after checkpoint n's
    X86_TSC_INFO, offset after its libxc CHECKPOINT, offset after its
    CHECKPOINT_END)."""
    out = bytearray(xl_header() + libxl_header() + rec(S.LIBXL_LIBXC_CONTEXT) + libxc_headers())
    out += rec(S.LIBXC_X86_PV_INFO, b"\0" * 8) + rec(0x11, b"\7" * 48) + rec(0x12, b"\7" * 40)
    out += rec(S.LIBXC_STATIC_DATA_END) + rec(S.LIBXC_X86_PV_P2M_FRAMES, b"\0" * 24)
    out += page_data(list(range(16)))           # the live pre-copy
    marks = []
    for n in range(checkpoints):
        out += page_data([100 + n * 7 + i for i in range(pages_per_checkpoint)])
        tail = checkpoint_tail()
        tsc_end = len(out) + len(rec(S.LIBXC_X86_TSC_INFO, b"\1" * 24))
        out += tail
        libxc_end = len(out)
        out += rec(S.LIBXL_CHECKPOINT_END)
        marks.append((tsc_end, libxc_end, len(out)))
    if end:
        out += rec(S.LIBXC_END) + rec(S.LIBXL_END)
    return bytes(out), marks
