"""The resync wire protocol, version 1 (specified in docs/protocol.md).

A record is an 8-byte header ``!BBHI`` (type, flags = 0, reserved = 0,
payload length) and the payload.  Every type has its own length bound;
an unknown type, non-zero flags, or a length over the bound is a
:class:`ProtocolError` before a byte of the payload is read.

Channels carry records between the two ends:

- :class:`StreamChannel` over a socket (TCP, socketpair) or a pair of file
  descriptors (the stdin/stdout of ``ssh HOST xen-remus receive --stdio``);
- :func:`local_pair`, two in-process channels joined by bounded queues, for
  a target on this host (no serialisation; ``bytes_out`` still counts the
  size the records would have on a wire).
"""
from __future__ import absolute_import, division, print_function

import binascii
import errno
import hashlib
import hmac
import io
import json
import os
import select
import stat
import struct
import threading
import time

import six
from six.moves import queue

from xen_remus_ext.compat import integer_types, string_types, to_bytes, to_text
from xen_remus_ext.errors import ProtocolError, ResyncError, TargetBusyError

VERSION = 3
#: version 2 adds REFINE/FINE (sub-block digests) and compressed DATA; version 3
#: re-verifies a resumed write phase's finished ranges by digests (RANGES in
#: every write mode when START's answer names finished ranges)
VERSIONS = (1, 2, 3)
MAGIC = "xen-remus-resync"

HEADER = struct.Struct("!BBHI")
U64 = struct.Struct("!Q")
U64U32 = struct.Struct("!QI")
U64U64 = struct.Struct("!QQ")

#: the biggest DATA payload a sender emits (one chunk)
MAX_DATA = 1 << 20
JSON_MAX = 64 * 1024

HELLO = 0x01
AUTH = 0x02
INFO = 0x03
START = 0x04
RANGES = 0x05
DIGESTS = 0x10
REFINE = 0x11
FINE = 0x12
DATA = 0x20
ZERO = 0x21
MARK = 0x22
END = 0x30
RESULT = 0x31
BYE = 0x32
ERROR = 0x3F
#: the first byte of a TLS ClientHello (a TLS record of type handshake)
TLS_HANDSHAKE = 0x16

NAMES = {HELLO: "HELLO", AUTH: "AUTH", INFO: "INFO", START: "START", RANGES: "RANGES",
         DIGESTS: "DIGESTS", REFINE: "REFINE", FINE: "FINE", DATA: "DATA", ZERO: "ZERO", MARK: "MARK", END: "END",
         RESULT: "RESULT", BYE: "BYE", ERROR: "ERROR"}

#: payload bound of each record type
LIMITS = {HELLO: JSON_MAX, AUTH: JSON_MAX, INFO: JSON_MAX, START: JSON_MAX,
          RANGES: 4096 * 16, DIGESTS: U64U32.size + (MAX_DATA // 4096) * 32,
          REFINE: U64U32.size * (MAX_DATA // 4096),
          FINE: U64U32.size * (MAX_DATA // 4096) + (MAX_DATA // 4096) * 32,
          DATA: U64.size + MAX_DATA, ZERO: U64U64.size, MARK: 4096 * 16, END: JSON_MAX,
          RESULT: JSON_MAX, BYE: 0, ERROR: JSON_MAX}


# -- helpers both ends use ----------------------------------------------------

def mac(key, label, *parts):
    """HMAC-SHA256 under ``key`` of ``label|part|part...`` (the handshake's MACs)."""
    return hmac.new(key, to_bytes(label) + b"|" + b"|".join(parts), hashlib.sha256).digest()


def hexb(b):
    """bytes -> hex text (nonces, MACs and salts travel as hex in JSON)."""
    return to_text(binascii.hexlify(b))


def is_int(v):
    """True for an integer that is not a bool (JSON ``true`` is not a number)."""
    return isinstance(v, integer_types) and not isinstance(v, bool)


def field(obj, record, name, types, default):
    """``obj[name]`` of a peer's JSON record, type-checked.

    :param types: a type or a tuple of types; a bool only passes when
        ``bool`` is named (JSON ``true`` is not a number).
    :raises ProtocolError: present with another type (None counts as absent).
    """
    v = obj.get(name)
    if v is None:
        return default
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(v, bool) and bool not in allowed or not isinstance(v, allowed):
        raise ProtocolError("%s record: expected %s of type %s, got %s"
                            % (record, name, "/".join(sorted(set(t.__name__ for t in allowed))),
                               type(v).__name__))
    return v


def unhexb(name, s):
    if not isinstance(s, string_types):
        raise ProtocolError("%s: expected hex digits, got %s" % (name, type(s).__name__))
    try:
        return binascii.unhexlify(to_bytes(s))
    except (TypeError, ValueError, binascii.Error):
        raise ProtocolError("%s: expected hex digits, got %r" % (name, s))


def check_block_size(bs):
    if not is_int(bs) or bs < 4096 or bs > MAX_DATA or bs & (bs - 1):
        raise ProtocolError("block size: expected a power of two from 4096 to %d, got %r" % (MAX_DATA, bs))


#: the lowest rate cap (bytes/s) besides 0 (no cap): a few seconds per chunk at most
MIN_RATE = 256 * 1024


def check_rate(rate, what="rate"):
    """:returns: ``rate`` (bytes/s, 0 = no cap) as a number.

    :raises ProtocolError: not a finite number, negative, or under :data:`MIN_RATE`.
    """
    if isinstance(rate, bool) or not isinstance(rate, integer_types + (float,)) \
            or rate != rate or rate in (float("inf"), float("-inf")):
        raise ProtocolError("%s: expected a number of bytes/s, got %r" % (what, rate))
    if rate != 0 and not MIN_RATE <= rate:
        raise ProtocolError("%s: expected 0 (no cap) or at least %d bytes/s, got %r" % (what, MIN_RATE, rate))
    return rate


def read_key_file(path):
    """:returns: the key bytes of a root-only key file.

    A value that names no file is never repeated in the message: it may be
    the key itself, given by mistake instead of a file's name.

    :raises ResyncError: missing, not a regular file (a FIFO would block
        forever), readable by others, or shorter than 16 bytes.
    """
    fd = failed = None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    except (IOError, OSError) as exc:
        failed = (getattr(exc, "errno", None), getattr(exc, "strerror", None) or str(exc))
    # raised out here, not in the handler: on 3 the OSError (whose text holds
    # the name) would travel along as the new error's context into a debug log
    if failed is not None and failed[0] == errno.ENOENT:
        raise ResyncError("key file: no file of the name given (%d characters, not shown: it may be key "
                          "material); expected the path of a file holding the key" % len(path))
    if failed is not None:
        raise ResyncError("key file %s: cannot read: %s" % (path, failed[1]))
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ResyncError("key file %s: expected a regular file, got %s"
                              % (path, "a FIFO" if stat.S_ISFIFO(st.st_mode) else "another file type"))
        chunks = []
        while True:
            data = os.read(fd, 65536)
            if not data:
                break
            chunks.append(data)
            if sum(len(c) for c in chunks) > 1 << 20:
                raise ResyncError("key file %s: expected a small file, got more than 1 MiB" % path)
        key = b"".join(chunks).strip()
    except (IOError, OSError) as exc:
        raise ResyncError("key file %s: cannot read: %s" % (path, getattr(exc, "strerror", None) or exc))
    finally:
        os.close(fd)
    if st.st_mode & 0o077:
        raise ResyncError("key file %s: expected mode 0600 or stricter (owner only), got %04o"
                          % (path, st.st_mode & 0o7777))
    if st.st_uid != os.geteuid():
        raise ResyncError("key file %s: expected to be owned by uid %d, got uid %d" % (path, os.geteuid(), st.st_uid))
    if len(key) < 16:
        raise ResyncError("key file %s: expected at least 16 bytes of key, got %d" % (path, len(key)))
    return key


def type_name(mtype):
    return NAMES.get(mtype, "0x%02x" % mtype)


def encode_json(obj):
    return to_bytes(json.dumps(obj, sort_keys=True))


def decode_json(mtype, payload):
    try:
        obj = json.loads(to_text(bytes(payload)))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError("%s record: expected a JSON object, got undecodable bytes (%s)"
                            % (type_name(mtype), exc))
    except RuntimeError:      # RecursionError on 3 (RuntimeError on 2.7): '[' nested thousands deep
        raise ProtocolError("%s record: expected a JSON object, got one nested too deep to decode"
                            % type_name(mtype))
    if not isinstance(obj, dict):
        raise ProtocolError("%s record: expected a JSON object, got %s" % (type_name(mtype), type(obj).__name__))
    return obj


#: DATA flag (version 2, when both ends agreed on a zstd kind): the bytes
#: after the offset are compressed (see :mod:`resync.compress`)
FLAG_ZSTD = 0x01


def check_header(mtype, flags, reserved, length, allowed=0, limit=None):
    """:param allowed: the flag bits this channel accepts on ``mtype``.
    :param limit: the payload bound, when the channel's codec sets another
        one for these flags (default :data:`LIMITS`)."""
    if mtype not in LIMITS:
        if mtype == TLS_HANDSHAKE:
            raise ProtocolError("record header: the peer speaks TLS, this end expected plaintext records "
                                "(start both ends with or both without --plaintext)")
        raise ProtocolError("record header: expected a known type, got 0x%02x" % mtype)
    if flags & ~allowed or reserved:
        raise ProtocolError("%s record: expected flags %s and reserved 0, got %d, %d"
                            % (type_name(mtype), "0" if not allowed else "within 0x%02x" % allowed,
                               flags, reserved))
    if limit is None:
        limit = LIMITS[mtype]
    if length > limit:
        raise ProtocolError("%s record: expected at most %d payload bytes, got %d"
                            % (type_name(mtype), limit, length))


class Channel(object):
    """Both directions of one session.  ``send`` is thread-safe."""

    bytes_out = 0
    bytes_in = 0
    #: a :class:`compress.Codec` once both ends agreed on one (byte streams only)
    codec = None

    def send(self, mtype, *parts):
        raise NotImplementedError

    def recv(self):
        """:returns: ``(mtype, payload)``; :raises ProtocolError: EOF or bad record."""
        raise NotImplementedError

    def close(self):
        raise NotImplementedError

    def wait_closed(self, timeout):
        """After our last record: wait up to ``timeout`` seconds for the peer
        to close its end (records still arriving are dropped), so that what
        it held for us (the target's lock) is free when we return.

        :returns: True when the peer closed in time.
        """
        return False

    def send_json(self, mtype, obj):
        self.send(mtype, encode_json(obj))

    def recv_json(self, *expected):
        mtype, payload = self.recv()
        if mtype == ERROR:
            raise_peer_error(payload)
        if expected and mtype not in expected:
            raise ProtocolError("expected %s record, got %s" % ("/".join(type_name(t) for t in expected),
                                                               type_name(mtype)))
        return mtype, decode_json(mtype, payload)

    def send_error(self, message, code=None):
        """Report a failure to the peer; ``code`` (an error class's ``code``,
        e.g. "busy") lets the peer raise the same class."""
        rec = {"error": to_text(message)[:4000]}
        if code:
            rec["code"] = code
        try:
            self.send_json(ERROR, rec)
        except (ResyncError, IOError, OSError):
            pass


_PEER_ERRORS = {TargetBusyError.code: TargetBusyError}


def raise_peer_error(payload):
    """:raises ResyncError: (or the subclass its ``code`` names) with the peer's message."""
    try:
        rec = decode_json(ERROR, payload)
        msg, code = rec.get("error", "unknown error"), rec.get("code")
    except (ProtocolError, AttributeError):
        msg, code = "unreadable error record", None
    cls = _PEER_ERRORS.get(code, ResyncError) if isinstance(code, six.string_types) else ResyncError
    raise cls("peer: %s" % (msg,))


#: ``socket.SHUT_RDWR`` (2 on Linux): how :meth:`StreamChannel.close` shuts a
#: socket down, so that a peer blocked reading sees the end at once.  Spelled
#: out here so that the protocol does not import the socket module (sockets
#: belong to the transports; ``socket.error`` is an ``IOError``/``OSError``
#: on both Pythons).
SHUT_RDWR = 2


class StreamChannel(Channel):
    """Records over a socket, or over a read fd and a write fd."""

    def __init__(self, sock=None, rfd=None, wfd=None, peer="peer"):
        self.sock = sock
        self.peer = peer
        if sock is None:
            self._r = io.FileIO(rfd, "rb", closefd=False)
            self._w = io.FileIO(wfd, "wb", closefd=False)
        self._lock = threading.Lock()
        self.bytes_out = 0
        self.bytes_in = 0
        self.closed = False
        #: when bytes last moved either way (a listener drops silent sessions)
        self.last_activity = time.time()

    def send(self, mtype, *parts):
        with self._lock:
            flags = 0
            if self.codec is not None:
                # under the lock: a stream codec's pieces must go out in the order they were made
                flags, parts = self.codec.pack(mtype, parts)
            length = sum(len(p) for p in parts)
            hdr = HEADER.pack(mtype, flags, 0, length)
            if parts and len(parts[-1]) >= BIG:
                # header and small parts in one write, the big tail without a copy
                bufs = (b"".join((hdr,) + tuple(_raw(p) for p in parts[:-1])), parts[-1])
            else:
                bufs = (b"".join((hdr,) + tuple(_raw(p) for p in parts)),)
            try:
                for buf in bufs:
                    if self.sock is not None:
                        self.sock.sendall(buf)
                    else:
                        view = memoryview(buf)
                        while len(view):
                            n = self._w.write(view)
                            view = view[n:]
                    self.last_activity = time.time()
            except (IOError, OSError) as exc:
                said = self._peer_last_words()
                if said is not None:  # e.g. the receiver's ENOSPC, not our EPIPE
                    raise ResyncError("peer: %s" % (said,))
                raise ResyncError("%s: connection lost while sending %s (%s)"
                                  % (self.peer, type_name(mtype), getattr(exc, "strerror", None) or exc))
            self.bytes_out += HEADER.size + length

    def readable_now(self):
        """:returns: True when a read would not block (data, EOF or an error
        is waiting).  An idle session's peer sends nothing, so on a
        connection kept open for later this means it ended."""
        fd = self.sock.fileno() if self.sock is not None else self._r.fileno()
        return bool(select.select([fd], [], [], 0)[0])

    def _peer_last_words(self, timeout=1.0):
        """After a failed send: the ERROR record the peer sent before it
        closed, if one is waiting (its reason beats our EPIPE); else None.
        Never blocks longer than ``timeout``; only the sending side calls it."""
        deadline = time.time() + timeout
        try:
            while True:       # records sent before it (e.g. DIGESTS) come first: skip them
                left = deadline - time.time()
                if left <= 0 or not self._readable(left):
                    return None
                mtype, payload = self.recv()
                if mtype == ERROR:
                    return decode_json(ERROR, payload).get("error", "unknown error")
        except (ResyncError, IOError, OSError, ValueError):
            return None

    def _read_exact(self, n):
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                if self.sock is not None:
                    k = self.sock.recv_into(view[got:], n - got)
                else:
                    k = self._r.readinto(view[got:])
            except (IOError, OSError) as exc:
                if getattr(exc, "errno", None) == errno.EINTR:
                    continue
                raise ProtocolError("%s: connection lost (%s)" % (self.peer, getattr(exc, "strerror", None) or exc))
            if not k:
                raise ProtocolError("%s: connection closed by the peer" % self.peer)
            got += k
            self.last_activity = time.time()
        self.bytes_in += n
        return buf

    def _readable(self, timeout):
        """Whether a byte of a record can be read within ``timeout`` seconds
        (a TLS socket may hold decrypted bytes the kernel does not know of)."""
        pending = getattr(self.sock, "pending", None)
        if pending is not None and pending():
            return True
        fd = self.sock.fileno() if self.sock is not None else self._r.fileno()
        return bool(select.select([fd], [], [], timeout)[0])

    def wait_closed(self, timeout):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0:
                return False
            try:
                if not self._readable(left):
                    return False
                self.recv()
            except (ResyncError, IOError, OSError, ValueError):
                return True

    def recv(self):
        hdr = self._read_exact(HEADER.size)
        mtype, flags, reserved, length = HEADER.unpack(bytes(hdr))
        codec = self.codec
        if codec is None:
            check_header(mtype, flags, reserved, length)
        else:
            check_header(mtype, flags, reserved, length, codec.accepts(mtype), codec.limit(mtype, flags))
        payload = self._read_exact(length) if length else bytearray()
        if flags:
            payload = codec.unpack(mtype, flags, payload)
        return mtype, payload

    def close(self):
        if self.closed:
            return
        self.closed = True
        if self.sock is not None:
            try:
                self.sock.shutdown(SHUT_RDWR)
            except (IOError, OSError):
                pass
            self.sock.close()


_CLOSED = object()

#: a payload part this long is passed on without being copied
BIG = 64 * 1024


class Parts(tuple):
    """An in-process payload kept as (head bytes, data buffer): no copy."""

    def __new__(cls, head, data):
        return tuple.__new__(cls, (head, data))

    def __len__(self):
        return len(self[0]) + len(self[1])


def split_data(payload):
    """A DATA payload -> ``(offset, data buffer)``.

    :raises ProtocolError: shorter than its 8-byte offset.
    """
    if isinstance(payload, Parts):
        head, data = tuple.__getitem__(payload, 0), tuple.__getitem__(payload, 1)
        if len(head) != U64.size:
            raise ProtocolError("DATA record: expected an 8-byte offset, got %d bytes" % len(head))
        return U64.unpack(head)[0], data
    if len(payload) < U64.size:
        raise ProtocolError("DATA record: expected 8+ bytes, got %d" % len(payload))
    return U64.unpack_from(payload)[0], memoryview(payload)[U64.size:]


def _raw(part):
    """bytes of a payload part (``bytes(memoryview)`` is its repr on 2.7)."""
    return part.tobytes() if isinstance(part, memoryview) else part


class LocalChannel(Channel):
    """One end of an in-process pair (see :func:`local_pair`)."""

    def __init__(self, inbox, outbox, peer):
        self._in = inbox
        self._out = outbox
        self.peer = peer
        self.bytes_out = 0
        self.bytes_in = 0
        self._lock = threading.Lock()
        self.closed = False
        self.other = None

    def send(self, mtype, *parts):
        if len(parts) <= 1:
            payload = _raw(parts[0]) if parts else b""
        elif len(parts[-1]) >= BIG:
            payload = Parts(b"".join(_raw(p) for p in parts[:-1]), parts[-1])   # no copy of the data
        else:
            payload = b"".join(_raw(p) for p in parts)
        length = len(payload)
        check_header(mtype, 0, 0, length)
        with self._lock:
            while True:
                if self.closed or self.other.closed:
                    said = self._peer_last_words()
                    if said is not None:  # e.g. the receiver's ENOSPC
                        raise ResyncError("peer: %s" % (said,))
                    raise ResyncError("%s: connection lost while sending %s" % (self.peer, type_name(mtype)))
                try:
                    self._out.put((mtype, payload), timeout=0.2)
                    break
                except queue.Full:
                    continue
            self.bytes_out += HEADER.size + length

    def _peer_last_words(self):
        """After the peer closed: the message of the ERROR it sent last, or None."""
        try:
            while True:
                item = self._in.get_nowait()
                if item is _CLOSED:
                    return None
                if item[0] == ERROR:
                    return decode_json(ERROR, _raw(item[1])).get("error", "unknown error")
        except (queue.Empty, ResyncError):
            return None

    def recv(self):
        while True:
            try:
                item = self._in.get(timeout=0.2)
            except queue.Empty:
                if self.other.closed or self.closed:
                    raise ProtocolError("%s: connection closed by the peer" % self.peer)
                continue
            if item is _CLOSED:
                self.closed = True
                raise ProtocolError("%s: connection closed by the peer" % self.peer)
            self.bytes_in += HEADER.size + len(item[1])
            return item

    def close(self):
        if not self.closed:
            self.closed = True
            try:
                self._out.put_nowait(_CLOSED)
            except queue.Full:
                pass

    def wait_closed(self, timeout):
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                item = self._in.get(timeout=0.05)
            except queue.Empty:
                if self.other.closed:
                    return True
                continue
            if item is _CLOSED:
                self.closed = True
                return True
        return False


def local_pair(depth=16):
    """Two joined in-process channels, ``(sender_end, receiver_end)``."""
    a, b = queue.Queue(depth), queue.Queue(depth)
    s = LocalChannel(b, a, "local receiver")
    r = LocalChannel(a, b, "local sender")
    s.other, r.other = r, s
    return s, r


def pack_ranges(intervals):
    """Binary RANGES payloads: lists of ``!QQ`` (start, end), bounded per record."""
    per = LIMITS[RANGES] // U64U64.size
    out = []
    for i in range(0, len(intervals), per):
        out.append(b"".join(U64U64.pack(s, e) for s, e in intervals[i:i + per]))
    return out


def unpack_ranges(payload, size):
    if len(payload) % U64U64.size:
        raise ProtocolError("RANGES record: expected a multiple of 16 bytes, got %d" % len(payload))
    out = []
    for i in range(0, len(payload), U64U64.size):
        s, e = U64U64.unpack_from(payload, i)
        if not (s < e <= size):
            raise ProtocolError("RANGES record: expected 0 <= start < end <= %d, got %d, %d" % (size, s, e))
        out.append((s, e))
    return out
