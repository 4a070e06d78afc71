"""The lab's memory image: framed JSON records (``XSIM``, uint32 length, body)
and page records (``XPGS``, uint32 length, that many bytes: the bulk a real
image has, so a stream the receiver stops reading fails the sender as it
would).  Written by the xc_save and checkpoint stand-ins, read by xc_restore."""
from __future__ import absolute_import, division, print_function

import json
import os
import struct

MAGIC = b"XSIM"
PAGES = b"XPGS"
CHUNK = 1 << 20
_HEAD = struct.Struct("!4sI")


def write_record(fd, obj):
    body = json.dumps(obj, sort_keys=True).encode("utf-8")
    data = _HEAD.pack(MAGIC, len(body)) + body
    while data:
        n = os.write(fd, data)
        data = data[n:]


def write_pages(fd, nbytes):
    """``nbytes`` of page data, in records of at most CHUNK bytes."""
    block = b"\0" * CHUNK
    while nbytes > 0:
        n = min(nbytes, CHUNK)
        data = _HEAD.pack(PAGES, n) + block[:n]
        while data:
            w = os.write(fd, data)
            data = data[w:]
        nbytes -= n


def _read_exact(fd, n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(fd, n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def read_record(fd):
    """:returns: the next record, or None at EOF or a torn record."""
    try:
        head = _read_exact(fd, _HEAD.size)
        if head is None:
            return None
        magic, length = _HEAD.unpack(head)
        while magic == PAGES:
            if _read_exact(fd, length) is None:
                return None
            head = _read_exact(fd, _HEAD.size)
            if head is None:
                return None
            magic, length = _HEAD.unpack(head)
        if magic != MAGIC:
            return None
        body = _read_exact(fd, length)
    except OSError:
        return None
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))
