"""Scanner of the stream ``xl remus`` writes, and where its checkpoints are.

Pure core: no I/O.  A relay feeds it the bytes it forwards, in chunks of any
size, and learns where each element ends.  The layers, as Xen 4.17 writes
them (``tools/xl/xl_saverestore.c``, ``docs/specs/libxl-migration-stream.pandoc``,
``docs/specs/libxc-migration-stream.pandoc``):

1. xl's save-file header: 32-byte magic, then four native-order u32
   (byte order 0x01020304, mandatory flags, optional flags, optional data
   length) and the optional data (u32 config length + the JSON config);
2. the libxl v2 stream: a 16-byte big-endian header (``LibxlFmt``, version 2,
   options) and records ``u32 type, u32 body_length, body, pad to 8``;
3. after the libxl LIBXC_CONTEXT record, libxc's stream: a 24-byte image
   header (marker ~0, ``XENF``, version 2 or 3, options), a 16-byte domain
   header and records of the same framing.  libxc's CHECKPOINT record hands
   the stream back to libxl, which writes its checkpoint records (emulator
   state for HVM) and CHECKPOINT_END, after which libxc's records go on with
   no new header; libxc's END hands it back for good.

:class:`CheckpointTracker` turns those elements into the two facts disk
replication needs (see docs/design/xl-disk-replication.md):

- ``SUSPENDED``: libxc's X86_TSC_INFO record is complete.  libxc writes it in
  ``end_of_checkpoint`` after ``suspend_domain`` returned, and the domain is
  resumed only after libxc's CHECKPOINT record is written; for a PV guest at
  least SHARED_INFO (4104 bytes) and CHECKPOINT (8) still follow, so a relay
  that stops reading here while its input pipe holds at most 4096 bytes
  keeps the guest suspended until it reads on.
- ``COMMIT``: libxl's CHECKPOINT_END record is complete: the checkpoint is
  whole; a backup that has it resumes from it at failover.
"""
from __future__ import absolute_import, division, print_function

import collections
import struct

from xen_remus_ext.errors import StreamFormatError

XL_MAGIC = b"Xen saved domain, xl format\n \0 \r"
XL_BYTEORDER = 0x01020304
XL_FLAG_JSON = 1 << 0                      # XL_MANDATORY_FLAG_JSON (tools/xl/xl.h)
XL_FLAG_STREAMV2 = 1 << 1                  # XL_MANDATORY_FLAG_STREAMv2
XL_FIXED = struct.Struct("<IIII")          # after the 32-byte magic
LIBXL_IDENT = 0x4c6962786c466d74           # "LibxlFmt"
LIBXL_HEADER = struct.Struct(">QII")
LIBXC_MARKER = 0xFFFFFFFFFFFFFFFF
LIBXC_ID = 0x58454E46                      # "XENF"
LIBXC_IHDR = struct.Struct(">QIIHHI")
LIBXC_DHDR = struct.Struct("<IHHII")
REC_HEADER = struct.Struct("<II")
#: libxc's own bound (REC_LENGTH_MAX in xg_sr_stream_format.h)
REC_LENGTH_MAX = 128 << 20

# libxl record types (libxl_sr_stream_format.h)
LIBXL_END = 0
LIBXL_LIBXC_CONTEXT = 1
LIBXL_EMULATOR_XENSTORE_DATA = 2
LIBXL_EMULATOR_CONTEXT = 3
LIBXL_CHECKPOINT_END = 4
LIBXL_CHECKPOINT_STATE = 5
LIBXL_TYPES = {0: "END", 1: "LIBXC_CONTEXT", 2: "EMULATOR_XENSTORE_DATA",
               3: "EMULATOR_CONTEXT", 4: "CHECKPOINT_END", 5: "CHECKPOINT_STATE"}

# libxc record types (xg_sr_stream_format.h)
LIBXC_END = 0x0
LIBXC_PAGE_DATA = 0x1
LIBXC_X86_PV_INFO = 0x2
LIBXC_X86_PV_P2M_FRAMES = 0x3
LIBXC_X86_PV_VCPU_BASIC = 0x4
LIBXC_SHARED_INFO = 0x7
LIBXC_X86_TSC_INFO = 0x8
LIBXC_HVM_CONTEXT = 0x9
LIBXC_CHECKPOINT = 0xE
LIBXC_STATIC_DATA_END = 0x10
LIBXC_TYPES = {0x0: "END", 0x1: "PAGE_DATA", 0x2: "X86_PV_INFO", 0x3: "X86_PV_P2M_FRAMES",
               0x4: "X86_PV_VCPU_BASIC", 0x5: "X86_PV_VCPU_EXTENDED", 0x6: "X86_PV_VCPU_XSAVE",
               0x7: "SHARED_INFO", 0x8: "X86_TSC_INFO", 0x9: "HVM_CONTEXT", 0xA: "HVM_PARAMS",
               0xB: "TOOLSTACK", 0xC: "X86_PV_VCPU_MSRS", 0xD: "VERIFY", 0xE: "CHECKPOINT",
               0xF: "CHECKPOINT_DIRTY_PFN_LIST", 0x10: "STATIC_DATA_END",
               0x11: "X86_CPUID_POLICY", 0x12: "X86_MSR_POLICY"}
GUEST_PV = 1
GUEST_HVM = 2

# element kinds
XL_HEADER = "xl-header"
XL_OPTIONAL = "xl-optional-data"
LIBXL_STREAM_HEADER = "libxl-header"
LIBXL_RECORD = "libxl-record"
LIBXC_IMAGE_HEADER = "libxc-image-header"
LIBXC_DOMAIN_HEADER = "libxc-domain-header"
LIBXC_RECORD = "libxc-record"


class Element(collections.namedtuple("Element", "kind rtype length end")):
    """One complete element: ``kind``, record ``rtype`` (or None), body
    ``length``, and ``end``, the stream offset just past it (padding included)."""

    __slots__ = ()

    def name(self):
        if self.kind == LIBXL_RECORD:
            return "libxl %s" % LIBXL_TYPES.get(self.rtype, "0x%x" % self.rtype)
        if self.kind == LIBXC_RECORD:
            return "libxc %s" % LIBXC_TYPES.get(self.rtype, "0x%x" % self.rtype)
        return self.kind


def padded(length):
    return (length + 7) & ~7


class StreamScanner(object):
    """Incremental scanner: :meth:`feed` takes bytes, returns the elements
    they complete.  :meth:`want` is how many bytes the current element still
    needs, so a relay that never reads more than that stops exactly at an
    element's end.  Bad input raises :class:`StreamFormatError` naming the
    stream offset.

    :param xl_header: the stream starts with xl's save-file header (what
        ``xl remus`` and ``xl migrate`` send); False for a bare libxl stream.
    """

    def __init__(self, xl_header=True):
        self.offset = 0
        self.guest_type = None
        self.libxc_version = None
        self.done = False
        self._buf = bytearray()
        self._skip = 0            # body + padding bytes still to pass over
        self._pending = None      # Element to report when _skip reaches 0
        self._libxc = False       # records belong to libxc (else libxl)
        self._in_checkpoint = False
        if xl_header:
            self._state, self._need = "xl", 32 + XL_FIXED.size
        else:
            self._state, self._need = "libxl-header", LIBXL_HEADER.size

    def want(self):
        """Bytes until the current element ends (0 once libxl's END is read)."""
        if self.done:
            return 0
        if self._skip:
            return self._skip
        return self._need - len(self._buf)

    def feed(self, data):
        """Consume ``data``; return the list of :class:`Element` it completes."""
        out = []
        view = memoryview(data)
        pos, n = 0, len(view)
        while pos < n:
            if self.done:
                raise StreamFormatError("offset %d: %d bytes after libxl's END record"
                                        % (self.offset, n - pos))
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                self.offset += step
                if not self._skip:
                    out.append(self._finish(self._pending))
                continue
            step = min(self._need - len(self._buf), n - pos)
            self._buf += view[pos:pos + step].tobytes()
            pos += step
            self.offset += step
            if len(self._buf) == self._need:
                head = bytes(self._buf)
                self._buf = bytearray()
                el = self._header(head)
                if el is not None:
                    out.append(el)
        return out

    # -- one complete fixed-size piece -------------------------------------------
    def _fail(self, what):
        raise StreamFormatError("offset %d: %s" % (self.offset - self._need, what))

    def _header(self, head):
        state = self._state
        if state == "xl":
            if head[:32] != XL_MAGIC:
                self._fail("not an xl migration stream (magic %r)" % head[:32])
            order, mandatory, _optional, optlen = XL_FIXED.unpack(head[32:])
            if order != XL_BYTEORDER:
                self._fail("xl header byte order 0x%08x, expected 0x%08x" % (order, XL_BYTEORDER))
            if not mandatory & XL_FLAG_STREAMV2 or mandatory & ~(XL_FLAG_JSON | XL_FLAG_STREAMV2):
                self._fail("xl header mandatory flags 0x%x: expected the stream-v2 flag and no unknown one"
                           % mandatory)
            return self._body(Element(XL_HEADER, None, optlen, None), optlen,
                              "libxl-header", LIBXL_HEADER.size, pad=False)
        if state == "libxl-header":
            ident, version, options = LIBXL_HEADER.unpack(head)
            if ident != LIBXL_IDENT:
                self._fail("libxl stream ident 0x%016x, expected 0x%016x" % (ident, LIBXL_IDENT))
            if version != 2:
                self._fail("libxl stream version %d, expected 2" % version)
            if options & 1:
                self._fail("big-endian libxl stream (options 0x%x) is not supported" % options)
            return self._next(Element(LIBXL_STREAM_HEADER, None, 0, self.offset), "rec", REC_HEADER.size)
        if state == "libxc-ihdr":
            marker, ident, version, options, _r1, _r2 = LIBXC_IHDR.unpack(head)
            if marker != LIBXC_MARKER or ident != LIBXC_ID:
                self._fail("libxc image header marker 0x%x id 0x%x, expected 0x%x 0x%x"
                           % (marker, ident, LIBXC_MARKER, LIBXC_ID))
            if version not in (2, 3):
                self._fail("libxc stream version %d, expected 2 or 3" % version)
            if options & 1:
                self._fail("big-endian libxc stream is not supported")
            self.libxc_version = version
            return self._next(Element(LIBXC_IMAGE_HEADER, None, 0, self.offset), "libxc-dhdr", LIBXC_DHDR.size)
        if state == "libxc-dhdr":
            gtype, page_shift, _r, _major, _minor = LIBXC_DHDR.unpack(head)
            if gtype not in (GUEST_PV, GUEST_HVM):
                self._fail("libxc domain header guest type %d" % gtype)
            if page_shift != 12:
                self._fail("libxc domain header page_shift %d, expected 12" % page_shift)
            self.guest_type = gtype
            return self._next(Element(LIBXC_DOMAIN_HEADER, gtype, 0, self.offset), "rec", REC_HEADER.size)
        # a record header of the current layer
        rtype, length = REC_HEADER.unpack(head)
        if length > REC_LENGTH_MAX:
            self._fail("%s record type 0x%x length %d over %d"
                       % ("libxc" if self._libxc else "libxl", rtype, length, REC_LENGTH_MAX))
        kind = LIBXC_RECORD if self._libxc else LIBXL_RECORD
        if not self._libxc and rtype not in LIBXL_TYPES:
            # libxl_stream_read.c refuses any type it does not know
            self._fail("unknown libxl record type 0x%x" % rtype)
        return self._body(Element(kind, rtype, length, None), padded(length), "rec", REC_HEADER.size)

    def _next(self, el, state, need):
        self._state, self._need = state, need
        return el

    def _body(self, el, skip, state, need, pad=True):
        self._state, self._need = state, need
        if skip:
            self._skip, self._pending = skip, el
            return None
        return self._finish(el)

    def _finish(self, el):
        el = el._replace(end=self.offset)
        self._pending = None
        if el.kind == LIBXL_RECORD:
            if el.rtype == LIBXL_LIBXC_CONTEXT:
                self._libxc = True
                self._state, self._need = "libxc-ihdr", LIBXC_IHDR.size
            elif el.rtype == LIBXL_CHECKPOINT_END:
                if not self._in_checkpoint:
                    raise StreamFormatError("offset %d: CHECKPOINT_END outside a checkpoint" % el.end)
                self._in_checkpoint = False
                self._libxc = True
            elif el.rtype == LIBXL_END:
                if self._in_checkpoint:
                    raise StreamFormatError("offset %d: libxl END inside a checkpoint" % el.end)
                self.done = True
        elif el.kind == LIBXC_RECORD:
            if el.rtype == LIBXC_CHECKPOINT:
                self._in_checkpoint = True
                self._libxc = False
            elif el.rtype == LIBXC_END:
                self._libxc = False
        return el


# -- checkpoints -----------------------------------------------------------------
SUSPENDED = "suspended"
COMMIT = "commit"
END = "end"


class Fact(collections.namedtuple("Fact", "kind checkpoint offset")):
    """``SUSPENDED``/``COMMIT``/``END`` for checkpoint number ``checkpoint``
    (0 is the first, the end of the live pre-copy), at stream ``offset``."""

    __slots__ = ()


class CheckpointTracker(object):
    """Follows the elements of one stream and reports the checkpoint facts.

    Fails closed: a checkpoint whose libxc part ends (CHECKPOINT) without a
    SUSPENDED point before it, or a guest type whose tail after the suspend
    point is not known to be long enough, is a :class:`StreamFormatError`.
    """

    def __init__(self):
        self.checkpoint = 0
        self.suspended_at = None      # stream offset of this checkpoint's SUSPENDED
        self.libxc_end_at = None      # stream offset just past its libxc CHECKPOINT
        self.guest_type = None

    def facts(self, elements):
        out = []
        for el in elements:
            fact = self._one(el)
            if fact is not None:
                out.append(fact)
        return out

    def _one(self, el):
        if el.kind == LIBXC_DOMAIN_HEADER:
            self.guest_type = el.rtype
            if el.rtype != GUEST_PV:
                raise StreamFormatError(
                    "offset %d: HVM guest: the suspend point is proven for PV guests only" % el.end)
            return None
        if el.kind == LIBXC_RECORD:
            if el.rtype == LIBXC_X86_TSC_INFO and self.suspended_at is None:
                self.suspended_at = el.end
                return Fact(SUSPENDED, self.checkpoint, el.end)
            if el.rtype == LIBXC_CHECKPOINT:
                if self.suspended_at is None:
                    raise StreamFormatError("offset %d: checkpoint %d ended with no X86_TSC_INFO record"
                                            % (el.end, self.checkpoint))
                self.libxc_end_at = el.end
            return None
        if el.kind == LIBXL_RECORD and el.rtype == LIBXL_CHECKPOINT_END:
            fact = Fact(COMMIT, self.checkpoint, el.end)
            self.checkpoint += 1
            self.suspended_at = self.libxc_end_at = None
            return fact
        if el.kind == LIBXL_RECORD and el.rtype == LIBXL_END:
            return Fact(END, self.checkpoint, el.end)
        return None

    def tail_after_suspend(self):
        """Bytes libxc had to write after the SUSPENDED point before it could
        resume the guest (through its CHECKPOINT record); None until known."""
        if self.suspended_at is None or self.libxc_end_at is None:
            return None
        return self.libxc_end_at - self.suspended_at
