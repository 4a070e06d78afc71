"""Frames of the replication link and of the disk server's control socket.

Pure core: encoding and an incremental decoder, no I/O.  A frame is an
8-byte header ``!BBHI`` (type, flags = 0, reserved = 0, body length) and the
body.  One format serves both channels:

primary relay -> backup relay (one ssh or TCP connection):
  XEN     bytes of xl's migration stream, forwarded unchanged
  WRITE   ``!QQ`` epoch, byte offset, then the data of one guest write
  CUT     ``!QQQ`` epoch, writes, bytes: epoch N holds exactly these writes
  BEAT    heartbeat, empty
  ABORT   utf-8 reason: stop without failing over
backup relay -> primary relay:
  BACK    bytes of ``xl migrate-receive``'s replies (banner, ...)
  ACK     ``!Q`` checkpoint N committed on the backup (disk and memory)
relay <-> disk server (unix socket):
  HELLO   JSON (``{"baseline": "full"|"none"}`` from the relay; the export's
          ``{"size": N}`` in the reply), then WRITE frames from the server
          and CUT (empty request, ``!QQQ`` reply after that epoch's writes);
          ABORT (utf-8 reason) in place of the reply HELLO when the server
          refuses the relay (another one is attached, a bad baseline).
"""
from __future__ import absolute_import, division, print_function

import json
import struct

from xen_remus_ext.compat import to_bytes, to_text
from xen_remus_ext.errors import ReplicationError

HEADER = struct.Struct("!BBHI")
WRITE_HEAD = struct.Struct("!QQ")
CUT_BODY = struct.Struct("!QQQ")
U64 = struct.Struct("!Q")

XEN, WRITE, CUT, BEAT, ABORT, BACK, ACK, HELLO = 1, 2, 3, 4, 5, 6, 7, 8
NAMES = {XEN: "XEN", WRITE: "WRITE", CUT: "CUT", BEAT: "BEAT", ABORT: "ABORT",
         BACK: "BACK", ACK: "ACK", HELLO: "HELLO"}
#: bound on one body: a guest write of the largest NBD request plus its head
MAX_BODY = (32 << 20) + WRITE_HEAD.size
_FIXED = {CUT: (0, CUT_BODY.size), BEAT: (0, 0), ACK: (U64.size, U64.size),
          WRITE: (WRITE_HEAD.size, MAX_BODY), HELLO: (2, 65536), ABORT: (0, 4096),
          XEN: (1, MAX_BODY), BACK: (1, MAX_BODY)}


def frame(ftype, body=b""):
    """One encoded frame (bytes)."""
    lo, hi = _FIXED[ftype]
    if not lo <= len(body) <= hi:
        raise ReplicationError("%s frame body of %d bytes (allowed %d..%d)"
                               % (NAMES[ftype], len(body), lo, hi))
    return HEADER.pack(ftype, 0, 0, len(body)) + bytes(body)


def write_frame(epoch, offset, data):
    return frame(WRITE, WRITE_HEAD.pack(epoch, offset) + bytes(data))


def cut_frame(epoch, writes, nbytes):
    return frame(CUT, CUT_BODY.pack(epoch, writes, nbytes))


def ack_frame(checkpoint):
    return frame(ACK, U64.pack(checkpoint))


def hello_frame(obj):
    return frame(HELLO, to_bytes(json.dumps(obj, sort_keys=True)))


def parse_write(body):
    epoch, offset = WRITE_HEAD.unpack_from(body, 0)
    return epoch, offset, body[WRITE_HEAD.size:]


def parse_cut(body):
    if len(body) != CUT_BODY.size:
        raise ReplicationError("CUT frame of %d bytes where a cut's %d were due" % (len(body), CUT_BODY.size))
    return CUT_BODY.unpack(body)


def parse_ack(body):
    return U64.unpack(body)[0]


def parse_hello(body, peer):
    try:
        obj = json.loads(to_text(body))
    except ValueError as exc:
        raise ReplicationError("%s: HELLO is not JSON (%s)" % (peer, exc))
    if not isinstance(obj, dict):
        raise ReplicationError("%s: HELLO is not a JSON object" % peer)
    return obj


class Decoder(object):
    """Incremental decoder: :meth:`feed` returns complete ``(type, body)``
    pairs.  An unknown type, non-zero flags or a body length out of bounds
    is a :class:`ReplicationError` naming ``peer`` before the body is read."""

    def __init__(self, peer):
        self.peer = peer
        self._buf = bytearray()

    def pending(self):
        return len(self._buf)

    def feed(self, data):
        self._buf += data
        out = []
        while len(self._buf) >= HEADER.size:
            ftype, flags, reserved, length = HEADER.unpack_from(self._buf, 0)
            if ftype not in _FIXED or flags or reserved:
                raise ReplicationError("%s: bad frame header (type %d, flags %d, reserved %d)"
                                       % (self.peer, ftype, flags, reserved))
            lo, hi = _FIXED[ftype]
            if not lo <= length <= hi:
                raise ReplicationError("%s: %s frame of %d bytes (allowed %d..%d)"
                                       % (self.peer, NAMES[ftype], length, lo, hi))
            if len(self._buf) < HEADER.size + length:
                break
            body = bytes(self._buf[HEADER.size:HEADER.size + length])
            del self._buf[:HEADER.size + length]
            out.append((ftype, body))
        return out
