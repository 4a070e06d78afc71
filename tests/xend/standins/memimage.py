"""The lab's memory image: framed JSON records (``XSIM``, uint32 length, body)
and page records (``XPGS``, uint32 length, that many bytes: the bulk a real
image has, so a stream the receiver stops reading fails the sender as it
would).  Written by the xc_save and checkpoint stand-ins, read by xc_restore.

An HVM domain's stream also carries its device model's state, in the two
framings the real tools use: xend's save appends ``QemuDeviceModelRecord``
and the state up to the end of the stream (XendCheckpoint.save); the Remus
checkpointer sends ``RemusDeviceModelState``, a native uint32 length and the
state after each checkpoint (libcheckpoint.c ``send_qemu``)."""
from __future__ import absolute_import, division, print_function

import json
import os
import struct

MAGIC = b"XSIM"
PAGES = b"XPGS"
CHUNK = 1 << 20
_HEAD = struct.Struct("!4sI")
QEMU_SAVE = b"QemuDeviceModelRecord"
QEMU_REMUS = b"RemusDeviceModelState"
_QLEN = struct.Struct("=I")


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


def write_qemu(fd, data):
    """The device model's state as the Remus checkpointer sends it."""
    data = QEMU_REMUS + _QLEN.pack(len(data)) + data
    while data:
        n = os.write(fd, data)
        data = data[n:]


def read_record(fd):
    """:returns: the next memory record, or None at EOF, a torn record or
    anything else (a device model record)."""
    item = read_item(fd)
    return item[1] if item is not None and item[0] == "memory" else None


def read_item(fd):
    """:returns: ``("memory", record)``, ``("qemu", state bytes)``, or None
    at EOF or a torn item."""
    try:
        head = _read_exact(fd, _HEAD.size)
        if head is None:
            return None
        if head[:4] in (QEMU_SAVE[:4], QEMU_REMUS[:4]):
            return _read_qemu(fd, head)
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
    return "memory", json.loads(body.decode("utf-8"))


def _read_qemu(fd, head):
    rest = _read_exact(fd, len(QEMU_SAVE) - len(head))
    if rest is None:
        return None
    sig = head + rest
    if sig == QEMU_REMUS:
        n = _read_exact(fd, _QLEN.size)
        if n is None:
            return None
        data = _read_exact(fd, _QLEN.unpack(n)[0])
        return None if data is None else ("qemu", data)
    if sig != QEMU_SAVE:
        return None
    chunks = []          # xend's save: the state runs to the end of the stream
    while True:
        chunk = os.read(fd, CHUNK)
        if not chunk:
            return "qemu", b"".join(chunks)
        chunks.append(chunk)
