"""zstd compression of DATA records (protocol version 2; docs/protocol.md).

Both ends name what they can decompress in HELLO; when they agree, the
sender may set :data:`protocol.FLAG_ZSTD` on a DATA record, whose bytes
after the 8-byte offset are then one zstd frame that states its content
size (at most :data:`protocol.MAX_DATA`).  Each record is compressed on its
own, so a record never waits for the next one.

Incompressible data (random blocks, encrypted or already compressed files)
must not cost throughput: a record over 16 KiB is first judged by
compressing 8 samples of 2 KiB spread over it at level 1 (about 0.15 ms
per MiB here, against the milliseconds its bytes take on any link); it is
compressed whole when one of them shrinks by 10%; a small record is compressed
whole, and one that does not shrink makes the next small ones go out raw
without a look, for a stretch that doubles (up to :data:`MAX_SKIP` records)
while they stay incompressible.
"""
from __future__ import absolute_import, division, print_function

from xen_remus_ext.errors import ProtocolError
from xen_remus_ext.resync import protocol as P

try:
    import zstandard
except ImportError:  # pragma: no cover - a dependency; senders then offer nothing
    zstandard = None

ZSTD = "zstd"
CHOICES = ("auto", ZSTD, "none")
#: zstd level: about 300 MB/s per core on text, far above a WAN link
LEVEL = 3
#: a record smaller than this is not worth a frame header
MIN_RECORD = 256
#: a record over 16 KiB is judged by up to SAMPLES pieces of SAMPLE bytes,
#: spread over it, compressed at level 1: one that shrinks below
#: SAMPLE_RATIO makes the whole record worth compressing (a record often
#: mixes a compressed file with text; one sample would miss the text)
SAMPLE = 2048
SAMPLES = 8
SAMPLE_RATIO = 0.9
BIG = 16 * 1024
MAX_SKIP = 32


def available():
    """Codecs this end can use."""
    return [ZSTD] if zstandard is not None else []


def choose(offered):
    """The receiver's pick from the sender's offer (a list), or None."""
    if not isinstance(offered, list):
        return None
    for name in available():
        if name in offered:
            return name
    return None


class Codec(object):
    """One channel's compression state (:attr:`protocol.Channel.codec`).

    :param sending: this end sends DATA (the sender); the receiver only
        decompresses.
    """

    def __init__(self, name, sending):
        if name != ZSTD or zstandard is None:
            raise ProtocolError("compression: expected %s, got %r" % (" or ".join(available()) or "none", name))
        self.name = name
        self._c = zstandard.ZstdCompressor(level=LEVEL) if sending else None
        self._probe = zstandard.ZstdCompressor(level=1) if sending else None
        self._d = zstandard.ZstdDecompressor()
        self._skip = 0          # records still to send raw without a look
        self._stretch = 1       # the next skip, after one more incompressible verdict
        #: DATA bytes before and after compression (sending end)
        self.raw = 0
        self.packed = 0

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
            # a big record is always judged by its samples: 16 KiB of level-1
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
        out = self._c.compress(data)
        if len(out) >= n - n // 32:
            if n <= BIG:
                return self._incompressible(parts, n)
            self.packed += n
            return 0, parts
        self._stretch = 1
        self.packed += len(out)
        return P.FLAG_ZSTD, (head, out)

    def _worth(self, data, n):
        step = n // SAMPLES
        for i in range(SAMPLES):
            if len(self._probe.compress(data[i * step:i * step + SAMPLE])) <= SAMPLE * SAMPLE_RATIO:
                return True
        return False

    def _incompressible(self, parts, n):
        self._skip = self._stretch
        self._stretch = min(MAX_SKIP, self._stretch * 2)
        self.packed += n
        return 0, parts

    # -- receiving ---------------------------------------------------------
    def accepts(self, mtype):
        """Flag bits a received record of ``mtype`` may carry."""
        return P.FLAG_ZSTD if mtype == P.DATA else 0

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

