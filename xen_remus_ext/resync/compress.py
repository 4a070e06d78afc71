"""zstd compression of DATA records (protocol version 2; docs/protocol.md).

Both ends name what they can decompress in HELLO, and the receiver picks
the first kind of the sender's offer that it knows:

- ``zstd-stream`` (:data:`STREAM`): one zstd stream for the whole
  connection.  The sender feeds each record it compresses into one
  compressor and flushes a block at the end of the record
  (``COMPRESSOBJ_FLUSH_BLOCK``), so a record is complete on the wire and
  the next one still finds the earlier ones in the window (16 MiB, with
  long-distance matching).  A DATA record with :data:`protocol.FLAG_ZSTD`
  carries, after its 8-byte offset, the record's length (u32) and its
  piece of the stream.  Records sent raw never enter the stream, on either
  end, so the two contexts stay in step.
- ``zstd`` (:data:`ZSTD`): each record is one zstd frame of its own that
  states its content size; what older peers speak.

Incompressible data (random blocks, encrypted or already compressed files)
must not cost throughput: a record over 16 KiB is first judged by
compressing samples spread over it at level 1 (about 0.15 ms per MiB here,
against the milliseconds its bytes take on any link); it is compressed
whole when one of them shrinks by 10%; a small record is compressed whole,
and one that does not shrink makes the next small ones go out raw without a
look, for a stretch that doubles (up to :data:`MAX_SKIP` records) while
they stay incompressible.
"""
from __future__ import absolute_import, division, print_function

import struct

import six

from xen_remus_ext.errors import ProtocolError, ResyncError
from xen_remus_ext.resync import protocol as P

try:
    import zstandard
except ImportError:  # pragma: no cover - a dependency; senders then offer nothing
    zstandard = None

#: the ``--compress`` choice, and the per-record kind
ZSTD = "zstd"
#: one stream per connection, a flushed block per record
STREAM = "zstd-stream"
CHOICES = ("auto", ZSTD, "none")
#: zstd level: about 300 MB/s per core on text, far above a WAN link
LEVEL = 3
#: the stream's window (log2): a filesystem holds similar files far apart;
#: the receiver refuses a stream that asks for more
WINDOW_LOG = 24
#: a record smaller than this is not worth compressing
MIN_RECORD = 256
#: a record over 16 KiB is judged by up to SAMPLES pieces of SAMPLE bytes,
#: spread over it, compressed at level 1: one that shrinks below
#: SAMPLE_RATIO makes the whole record worth compressing (a record often
#: mixes compressed files with text; a few samples miss the text)
SAMPLE = 1024
SAMPLES = 32
SAMPLE_RATIO = 0.9
BIG = 16 * 1024
MAX_SKIP = 32
#: the record length in front of a zstd-stream piece
LENGTH = struct.Struct("!I")
#: the most a compressed DATA payload may hold: zstd's bound for one record
#: (ZSTD_compressBound), its length field and a frame header
MAX_PACKED = P.U64.size + LENGTH.size + P.MAX_DATA + P.MAX_DATA // 256 + 64


def available():
    """Codecs this end can use, the preferred first."""
    return [STREAM, ZSTD] if zstandard is not None else []


def offer(choice):
    """What a sender offers in HELLO for a ``--compress`` ``choice``
    (:data:`ZSTD`, or None): a list, or None."""
    return (available() or None) if choice == ZSTD else None


def choose(offered):
    """The receiver's pick from the sender's offer (a list), or None."""
    if not isinstance(offered, list):
        return None
    for name in available():
        if name in offered:
            return name
    return None


def make(name, sending):
    """The :class:`Codec` of kind ``name``.

    :raises ProtocolError: a kind this end does not know.
    """
    if zstandard is None or name not in (ZSTD, STREAM):
        raise ProtocolError("compression: expected %s, got %r" % (" or ".join(available()) or "none", name))
    return (StreamCodec if name == STREAM else Codec)(sending)


class Codec(object):
    """One channel's compression state (:attr:`protocol.Channel.codec`):
    each record a zstd frame of its own (:data:`ZSTD`).

    :param sending: this end sends DATA (the sender); the receiver only
        decompresses.  Not thread-safe: the channel packs and unpacks
        under its own locks, in wire order.
    """

    name = ZSTD

    def __init__(self, sending):
        self._c = self._compressor() if sending else None
        self._probe = zstandard.ZstdCompressor(level=1) if sending else None
        self._d = self._decompressor()
        self._skip = 0          # records still to send raw without a look
        self._stretch = 1       # the next skip, after one more incompressible verdict
        #: DATA bytes before and after compression (sending end)
        self.raw = 0
        self.packed = 0

    def _compressor(self):
        return zstandard.ZstdCompressor(level=LEVEL)

    def _decompressor(self):
        return zstandard.ZstdDecompressor()

    # -- sending -----------------------------------------------------------
    def pack(self, mtype, parts):
        """:returns: ``(flags, parts)`` for a record about to be sent."""
        if mtype != P.DATA or self._c is None or len(parts) != 2:
            return 0, parts
        head, data = parts
        n = len(data)
        self.raw += n
        if n < MIN_RECORD:
            self.packed += n
            return 0, parts
        if n > BIG:
            # a big record is always judged by its samples: 32 KiB of level-1
            # work, against the milliseconds its bytes take on any link
            if not self._worth(data, n):
                self.packed += n
                return 0, parts
        elif self._skip:
            # small records are compressed whole; after one that did not shrink,
            # the next 1, 2, 4 ... go raw without a look
            self._skip -= 1
            self.packed += n
            return 0, parts
        return self._compress(head, data, n)

    def _compress(self, head, data, n):
        out = self._c.compress(data)
        if len(out) >= n - n // 32:
            if n <= BIG:
                self._incompressible()
            self.packed += n
            return 0, (head, data)
        self._stretch = 1
        self.packed += len(out)
        return P.FLAG_ZSTD, (head, out)

    def _worth(self, data, n):
        step = n // SAMPLES
        for i in range(SAMPLES):
            if len(self._probe.compress(data[i * step:i * step + SAMPLE])) <= SAMPLE * SAMPLE_RATIO:
                return True
        return False

    def _incompressible(self):
        self._skip = self._stretch
        self._stretch = min(MAX_SKIP, self._stretch * 2)

    # -- receiving ---------------------------------------------------------
    def accepts(self, mtype):
        """Flag bits a received record of ``mtype`` may carry."""
        return P.FLAG_ZSTD if mtype == P.DATA else 0

    def limit(self, mtype, flags):
        """The payload bound of a received record (its header's ``flags``)."""
        return P.LIMITS[mtype]

    def unpack(self, mtype, flags, payload):
        """A received compressed DATA payload -> ``Parts(offset bytes, data)``.

        :raises ProtocolError: not a zstd frame, no content size or one over
            the DATA bound, or bytes that do not decompress to that size.
        """
        if len(payload) < P.U64.size + 4:
            raise ProtocolError("DATA record: expected an offset and a zstd frame, got %d bytes" % len(payload))
        frame = bytes(payload[P.U64.size:])
        try:
            size = zstandard.frame_content_size(frame)
        except zstandard.ZstdError as exc:
            raise ProtocolError("DATA record: expected a zstd frame, got undecodable bytes (%s)" % exc)
        if size < 0 or size > P.MAX_DATA:
            raise ProtocolError("DATA record: expected a zstd frame stating a size up to %d, got %d"
                                % (P.MAX_DATA, size))
        try:
            data = self._d.decompress(frame, max_output_size=P.MAX_DATA)
        except zstandard.ZstdError as exc:
            raise ProtocolError("DATA record: expected a zstd frame, got undecodable bytes (%s)" % exc)
        if len(data) != size:
            raise ProtocolError("DATA record: the zstd frame states %d bytes, it holds %d" % (size, len(data)))
        return P.Parts(bytes(payload[:P.U64.size]), data)


class _TooLong(Exception):
    """A zstd-stream piece decompressed past the length its record states."""


class _Sink(object):
    """What the stream decompressor writes: one record's bytes, bounded.

    Past the bound it keeps nothing more.  On Python 3 it also raises
    :class:`_TooLong`, which stops the decompression at once; zstandard
    0.14 (Python 2.7) does not check what its writer returns, so there the
    sink only counts, and the caller sees the excess after the piece.
    """

    raises = not six.PY2

    def __init__(self):
        self.chunks = []
        self.n = 0
        self.limit = 0

    def write(self, data):
        self.n += len(data)
        if self.n > self.limit:
            if self.raises:
                raise _TooLong()
            return len(data)
        self.chunks.append(data)
        return len(data)

    def take(self):
        data = self.chunks[0] if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks = []
        self.n = 0
        return data


class StreamCodec(Codec):
    """:data:`STREAM`: one zstd stream for the connection, a block flushed
    at the end of every compressed record.

    Once a record has gone into the compressor, its piece of the stream is
    what the receiver's decompressor needs next: it is sent even when it
    came out no smaller (zstd then stores the blocks raw, 3 bytes a block),
    and only the stretch of small records sent raw without a look grows.
    """

    name = STREAM

    def __init__(self, sending):
        Codec.__init__(self, sending)
        self._s = self._c.compressobj() if sending else None
        self._sink = _Sink()
        self._w = self._d.stream_writer(self._sink, write_size=P.MAX_DATA + 1) if not sending else None

    def _compressor(self):
        params = zstandard.ZstdCompressionParameters.from_level(LEVEL, window_log=WINDOW_LOG, enable_ldm=True)
        return zstandard.ZstdCompressor(compression_params=params)

    def _decompressor(self):
        return zstandard.ZstdDecompressor(max_window_size=1 << WINDOW_LOG)

    def _compress(self, head, data, n):
        out = self._s.compress(data) + self._s.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
        if len(out) + LENGTH.size + len(head) > MAX_PACKED:
            # zstd's own bound makes this impossible; the stream is now ahead of
            # the receiver's, so the session cannot go on
            raise ResyncError("compression: a %d-byte record came out as %d bytes, over zstd's bound"
                              % (n, len(out)))
        if len(out) >= n - n // 32:
            if n <= BIG:
                self._incompressible()
        else:
            self._stretch = 1
        self.packed += len(out) + LENGTH.size
        return P.FLAG_ZSTD, (head + LENGTH.pack(n), out)

    def limit(self, mtype, flags):
        return MAX_PACKED if mtype == P.DATA and flags & P.FLAG_ZSTD else P.LIMITS[mtype]

    def unpack(self, mtype, flags, payload):
        """A received zstd-stream DATA payload -> ``Parts(offset bytes, data)``.

        :raises ProtocolError: a length over the DATA bound, bytes that are
            not the stream's next piece, or a piece that does not decompress
            to exactly that length (checked as it decompresses: a piece never
            makes more than the length in memory).
        """
        head = P.U64.size + LENGTH.size
        if len(payload) <= head:
            raise ProtocolError("DATA record: expected an offset, a length and a zstd-stream piece, got %d bytes"
                                % len(payload))
        n = LENGTH.unpack_from(payload, P.U64.size)[0]
        if not 0 < n <= P.MAX_DATA:
            raise ProtocolError("DATA record: expected a length from 1 to %d, got %d" % (P.MAX_DATA, n))
        sink = self._sink
        sink.limit = n
        try:
            self._w.write(memoryview(payload)[head:])
        except _TooLong:
            sink.n = n + 1
        except zstandard.ZstdError as exc:
            raise ProtocolError("DATA record: expected the next piece of the zstd stream, got undecodable bytes "
                                "(%s)" % exc)
        if sink.n > n:
            raise ProtocolError("DATA record: the zstd-stream piece holds more than the %d bytes it states" % n)
        if sink.n != n:
            raise ProtocolError("DATA record: the zstd-stream piece states %d bytes, it holds %d" % (n, sink.n))
        return P.Parts(bytes(payload[:P.U64.size]), sink.take())
