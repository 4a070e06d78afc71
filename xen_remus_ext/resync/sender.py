"""The sending end of a resync: reads the authoritative copy, drives the session.

:class:`SenderSession` does the client half of the handshake, then one
phase per :meth:`~SenderSession.transfer` / :meth:`~SenderSession.compare`
call.  A reader thread reads the source a few chunks ahead (bounded queue)
while the main thread matches the receiver's DIGESTS against them and
sends DATA/ZERO for what differs, so both disks are read at once and no
block waits on a round trip.
"""
from __future__ import absolute_import, division, print_function

import collections
import hashlib
import hmac
import os
import threading
import time

from six.moves import queue

from xen_remus_ext.compat import integer_types, to_bytes
from xen_remus_ext.errors import ProtocolError, ResyncError, XenRemusError
from xen_remus_ext.resync import compress as cz
from xen_remus_ext.resync import digest as dg
from xen_remus_ext.resync import plan
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync import refine
from xen_remus_ext.resync.blockio import BlockFile, is_zero
from xen_remus_ext.resync.ratelimit import TokenBucket
from xen_remus_ext.resync.protocol import field, hexb, is_int, mac, unhexb

#: the sender checkpoints (MARK) after an 8th of the work, clamped to these
#: bounds, or after MARK_SECONDS, whichever comes first.  Each MARK costs the
#: receiver an fdatasync (a device cache flush), so they stay few.
MARK_MIN = 1 << 20
MARK_MAX = 1 << 30
MARK_SECONDS = 5.0
READ_AHEAD = 8
#: seconds the sender waits after BYE for the receiver to close
BYE_WAIT = 10.0
#: source bytes held for REFINE requests in flight; past this the sender
#: waits for FINE answers before it compares more (bounded memory)
REFINE_WINDOW = 16 << 20


class _Reader(threading.Thread):
    """Reads ``(offset, length)`` pieces of the source into a bounded queue."""

    _END = object()

    def __init__(self, path, pieces, rate):
        threading.Thread.__init__(self, name="xre-read")
        self.daemon = True
        self.path = path
        self.pieces = pieces
        self.rate = rate
        self.q = queue.Queue(READ_AHEAD)
        self.stopped = False
        self.bytes_read = 0

    def run(self):
        try:
            with BlockFile(self.path) as f:
                for off, length in self.pieces:
                    if self.stopped:
                        return
                    self.rate.consume(length)
                    data = f.read_exactly(off, length)
                    self.bytes_read += length
                    self.q.put((off, data))
            self.q.put(self._END)
        except XenRemusError as exc:
            self.q.put(exc)

    def __iter__(self):
        while True:
            item = self.q.get()
            if item is self._END:
                return
            if isinstance(item, XenRemusError):
                raise item
            yield item

    def abandon(self):
        self.stopped = True
        try:
            while True:
                self.q.get_nowait()
        except queue.Empty:
            pass


class _InlineReader(object):
    """A :class:`_Reader` run in the caller's thread."""

    def __init__(self, reader, window=0, skip_holes=False):
        self.r = reader
        self.window = window
        self.skip_holes = skip_holes

    @property
    def bytes_read(self):
        return self.r.bytes_read

    #: pieces announced to the kernel ahead of the one being read
    WINDOW = 64

    def __iter__(self):
        r = self.r
        pieces = iter(r.pieces)
        ahead = collections.deque()
        data_until = 0                               # [.., data_until) is known to hold data
        with BlockFile(r.path) as f:
            while True:
                window = 1 if r.rate.rate else max(1, self.window)   # a rate cap caps I/O too
                while len(ahead) < window:
                    nxt = next(pieces, None)
                    if nxt is None:
                        break
                    if self.window:
                        f.will_need(*nxt)
                    ahead.append(nxt)
                if not ahead:
                    return
                off, length = ahead.popleft()
                if self.skip_holes and off >= data_until:
                    data_at = f.next_data(off)
                    if data_at >= off + length:      # a hole: zeros without reading them
                        yield off, length
                        continue
                    data_until = f.next_hole(data_at)
                r.rate.consume(length)
                data = f.read_exactly(off, length)
                r.bytes_read += length
                yield off, data

    def abandon(self):
        pass


def split_zero(off, data, bs):
    """Cut ``data`` (at disk offset ``off``) at multiples of ``bs`` into runs
    of all-zero and non-zero blocks: yields ``(zero, start, end)`` relative
    to ``data``."""
    n = len(data)
    if is_zero(data):
        yield (True, 0, n)
        return
    mv = memoryview(data)
    cur = 0
    run_start, run_zero = 0, None
    while cur < n:
        nxt = min(n, ((off + cur) // bs + 1) * bs - off)
        z = is_zero(mv[cur:nxt])
        if run_zero is None:
            run_zero = z
        elif z != run_zero:
            yield (run_zero, run_start, cur)
            run_start, run_zero = cur, z
        cur = nxt
    yield (run_zero, run_start, n)


class _Refinement(object):
    """One REFINE in flight: its blocks and the source bytes of each."""

    __slots__ = ("mode", "blocks", "held")

    def __init__(self, mode, blocks, held):
        self.mode = mode
        self.blocks = blocks
        self.held = held


def _raw(mv):
    return mv.tobytes()


def _done_ranges(pairs, size):
    """The receiver's journal ranges from its START answer, checked.

    :raises ProtocolError: not ``[start, end]`` integer pairs inside the disk.
    """
    out = []
    for p in pairs:
        if not (isinstance(p, list) and len(p) == 2 and all(is_int(v) for v in p) and 0 <= p[0] < p[1] <= size):
            raise ProtocolError("START record: expected done as [start, end] pairs within %d bytes, got %r"
                                % (size, p))
        out.append((p[0], p[1]))
    return plan.normalize(out)


class SenderSession(object):
    """The sending end of one connection.

    :param conn: a :class:`transport.Connection` (not yet handshaken).
    :param report: callable ``(done_bytes, total_bytes, wire_bytes)`` for progress, or None.
    :param events: callable receiving event dicts (``resume``), or None.
    """

    def __init__(self, conn, report=None, events=None):
        self.events = events
        self.conn = conn
        self.chan = conn.chan
        self.report = report
        self.base_key = b""
        self.info = None
        self.digests = []
        self.version = 1
        #: the codecs to offer (a list, e.g. ``compress.available()``) or None;
        #: :attr:`compressed` is what was agreed
        self.compress = cz.offer(getattr(conn, "compress", None))
        self.compressed = None
        #: bytes of RANGES, DIGESTS, REFINE and FINE records (headers included), both ways
        self.digest_bytes = 0
        self._inflight = collections.deque()   # REFINE requests awaiting FINE: _Refinement
        self._inflight_bytes = 0
        self._early = collections.deque()      # DIGESTS payloads read while waiting for a FINE
        self._recheck = []                     # finished ranges of the phase, compared again

    def handshake(self):
        nonce_c = os.urandom(16)
        offer = {"magic": P.MAGIC, "versions": list(P.VERSIONS), "digests": dg.available(),
                 "nonce": hexb(nonce_c), "export": self.conn.export}
        if self.compress:
            offer["compress"] = list(self.compress)
        self.chan.send_json(P.HELLO, offer)
        _, hello = self.chan.recv_json(P.HELLO)
        if hello.get("magic") != P.MAGIC or hello.get("version") not in P.VERSIONS:
            raise ProtocolError("HELLO: expected %s version in %s, got %r %r"
                                % (P.MAGIC, list(P.VERSIONS), hello.get("magic"), hello.get("version")))
        self.version = hello["version"]
        chosen = hello.get("compress") if self.version >= 2 else None
        if chosen is not None:
            if chosen not in (self.compress or ()):
                raise ProtocolError("HELLO: expected compression %s, got %r"
                                    % (" or ".join((self.compress or []) + ["none"]), chosen))
            self.chan.codec = cz.make(chosen, sending=True)
        self.compressed = chosen
        self.digests = [d for d in field(hello, "HELLO", "digests", list, []) if d in dg.available()]
        nonce_s = unhexb("HELLO nonce", hello.get("nonce", ""))
        key = self.conn.key
        if hello.get("auth"):
            if key is None:
                raise ResyncError("%s: the receiver requires authentication; pass --key KEYFILE" % self.conn.describe)
            binding = getattr(self.conn, "binding", b"")
            tls = (binding,) if binding else ()
            self.chan.send_json(P.AUTH, {"mac": hexb(mac(key, "client", nonce_s, nonce_c,
                                                         to_bytes(self.conn.export), *tls))})
            _, auth = self.chan.recv_json(P.AUTH)
            got = unhexb("AUTH mac", auth.get("mac", ""))
            if not hmac.compare_digest(got, mac(key, "server", nonce_c, nonce_s, *tls)):
                raise ProtocolError("authentication failed: the receiver does not hold our key%s"
                                    % (", or its TLS certificate is not the one we saw (a man in the middle?)"
                                       if tls else ""))
            self.base_key = mac(key, "session", nonce_s, nonce_c)
        elif key is not None:
            raise ProtocolError("%s: expected the receiver to authenticate, it offered no authentication"
                                % self.conn.describe)
        _, self.info = self.chan.recv_json(P.INFO)
        return self.info

    def pick_digest(self, strong):
        want = [dg.STRONG] if strong else [dg.FAST, dg.STRONG]
        for d in want:
            if d in self.digests:
                return d
        raise ResyncError("%s: no common digest (ours %s, receiver's %s)"
                          % (self.conn.describe, want, self.digests))

    def _start(self, mode, src_meta, bs, rate, digest, discard_target, resume, work, fine):
        """Send START, take the receiver's answer, send RANGES where due.

        :returns: ``(recheck, hasher)``: ``recheck`` is the part of ``work``
            an interrupted run had finished (version 3 receivers name it).
            It is never skipped: its blocks are compared by digests and what
            differs is sent, as in checksum mode, because the source may
            have been written since (an image file keeps its generation).
        """
        salt = os.urandom(16)
        start = {"mode": mode, "block_size": bs, "digest": digest, "salt": hexb(salt),
                 "rate": rate or 0, "source": src_meta.to_dict(),
                 "discard_target": bool(discard_target), "resume": bool(resume)}
        if self.version >= 2:
            start["fine"] = fine
        self.chan.send_json(P.START, start)
        _, ack = self.chan.recv_json(P.START)
        done = _done_ranges(field(ack, "START", "done", list, []), src_meta.size)
        if self.version < 3:
            done = []    # an older receiver would have us skip them unseen: they are sent again instead
        elif done and (mode == "verify" or digest is None):
            raise ProtocolError("START record: expected no finished ranges for a %s phase without digests, got %d"
                                % (mode, len(done)))
        recheck = plan.intersect(work, done)
        if mode in ("checksum", "verify") or done:
            for payload in P.pack_ranges(work if mode in ("checksum", "verify") else recheck) + [b""]:
                self.chan.send(P.RANGES, payload)
                self.digest_bytes += P.HEADER.size + len(payload)
        key = hmac.new(self.base_key, b"digest|" + salt, hashlib.sha256).digest()
        return recheck, (dg.make(digest, key) if digest else None)

    def run_phase(self, mode, src_path, src_meta, work, bs=65536, rate=None, digest=None,
                  discard_target=False, resume=True, commit=True, fine=refine.FINE):
        """One phase: ``mode`` in checksum, full, tracked (writes) or verify.

        :param work: intervals to process (the receiver's journal is
            subtracted by the receiver's answer to START).
        :param fine: checksum/verify: refine differing blocks to this size
            (0: send whole blocks; needs protocol version 2).
        :returns: dict with ``bytes_read`` (both ends), ``extents`` (sent or
            differing), ``differing`` (list of Extent, verify), ``resumed``
            (bytes of ``work`` an interrupted run had finished: compared by
            digests, not skipped) and ``resent`` (of those, bytes that
            differed and were sent again).
        """
        if self.version < 2 or mode not in ("checksum", "verify") or not fine or fine >= bs:
            fine = 0
        self.fine = fine
        recheck, hasher = self._start(mode, src_meta, bs, rate, digest, discard_target, resume, work, fine)
        self._recheck = recheck
        if recheck and self.events is not None:
            self.events({"event": "resume", "reverify": plan.total(recheck),
                         "remaining": plan.total(work) - plan.total(recheck)})
        bucket = TokenBucket(rate or 0)
        compare_all = mode in ("checksum", "verify")
        pieces = plan.chunks(work) if compare_all or not recheck else \
            plan.merged_chunks(recheck, plan.subtract(work, recheck))
        total = plan.total(work)
        mark_every = max(MARK_MIN, min(MARK_MAX, total // 8))
        reader = _Reader(src_path, pieces, bucket)
        if compare_all:
            reader.start()       # read ahead while waiting for the receiver's digests
        else:
            # the receiver writes while we read: one hop less; scattered
            # (tracked) extents are announced ahead, sequential reads have
            # the kernel's readahead (and WILLNEED on holes costs a memset)
            reader = _InlineReader(reader, window=_InlineReader.WINDOW if mode == "tracked" else 0,
                                   skip_holes=True)
        state = {"extents": 0, "last_end": -1, "differing": [], "resent": 0}
        pending = []
        pending_bytes = 0
        last_mark = time.time()
        processed = 0
        try:
            hole = None                              # a run of source holes not sent yet
            for off, data in reader:
                checking = compare_all or plan.covers(recheck, off)
                if isinstance(data, integer_types) and checking:
                    data = b"\0" * data             # a hole where the target's digests await
                if isinstance(data, integer_types):   # a hole of the source, ``data`` bytes long
                    n = data
                    if hole is not None and hole[1] == off:
                        hole[1] = off + n
                    else:
                        self._flush_hole(hole, state)
                        hole = [off, off + n]
                else:
                    n = len(data)
                    hole = self._flush_hole(hole, state)
                    if checking:
                        self._compare_chunk(mode, off, data, bs, hasher, state)
                    else:
                        self._send_range(off, data, bs, state)
                processed += n
                if mode != "verify":
                    pending.append((off, off + n))
                    pending_bytes += n
                    if pending_bytes >= mark_every or time.time() - last_mark >= MARK_SECONDS:
                        hole = self._flush_hole(hole, state)   # a MARK never runs ahead of its data
                        pending = self._mark(pending)
                        pending_bytes, last_mark = plan.total(pending), time.time()
                if self.report is not None:
                    self.report(processed, total, self.chan.bytes_out + self.chan.bytes_in)
        except BaseException:
            reader.abandon()
            raise
        self._flush_hole(hole, state)
        while self._inflight:
            self._await_fine(hasher, state)
        if self._early:
            raise ProtocolError("DIGESTS record: expected none after the last chunk, got %d more" % len(self._early))
        if pending:
            self._mark(pending)
        if callable(commit):
            commit = commit(state)
        self.chan.send_json(P.END, {"commit": commit})
        _, res = self.chan.recv_json(P.RESULT)
        return {"bytes_read": reader.bytes_read + field(res, "RESULT", "bytes_read", integer_types, 0),
                "extents": state["extents"], "differing": plan.intervals_to_extents(state["differing"]),
                "resumed": plan.total(recheck), "resent": state["resent"], "work": total,
                "digest_bytes": self.digest_bytes}

    def _flush_hole(self, hole, state):
        """Send a pending run of source holes as one ZERO; :returns: None."""
        if hole is not None:
            self.chan.send(P.ZERO, P.U64U64.pack(hole[0], hole[1] - hole[0]))
            self._count(state, hole[0], hole[1])
        return None

    def _mark(self, pending):
        """MARK what of ``pending`` is complete: everything before the oldest
        block still being refined.  :returns: the rest (marked later)."""
        pending = plan.normalize(pending)
        rest = []
        if self._inflight:
            limit = self._inflight[0].blocks[0][0]
            rest = plan.subtract(pending, [(0, limit)])
            pending = plan.subtract(pending, [(limit, limit + (1 << 62))])
        for payload in P.pack_ranges(pending):
            self.chan.send(P.MARK, payload)
        return rest

    def _count(self, state, start, end):
        if start != state["last_end"]:
            state["extents"] += 1
        state["last_end"] = end

    def _send_range(self, off, data, bs, state):
        mv = memoryview(data)
        for zero, a, b in split_zero(off, data, bs):
            if zero:
                self.chan.send(P.ZERO, P.U64U64.pack(off + a, b - a))
            else:
                self.chan.send(P.DATA, P.U64.pack(off + a), mv[a:b])
            self._count(state, off + a, off + b)

    def _recv_digest_stream(self):
        """The next DIGESTS or FINE record from the receiver: ``(mtype, payload)``."""
        mtype, payload = self.chan.recv()
        if mtype == P.ERROR:
            P.raise_peer_error(payload)
        if mtype not in (P.DIGESTS, P.FINE) or mtype == P.FINE and not self.fine:
            raise ProtocolError("expected DIGESTS record, got %s" % P.type_name(mtype))
        self.digest_bytes += P.HEADER.size + len(payload)
        return mtype, payload

    def _next_digests(self, hasher, state):
        """The DIGESTS of the next chunk, handling the FINE answers that come first."""
        if self._early:
            return self._early.popleft()
        while True:
            mtype, payload = self._recv_digest_stream()
            if mtype == P.DIGESTS:
                return payload
            self._on_fine(payload, hasher, state)

    def _await_fine(self, hasher, state):
        """Wait for the answer to the oldest REFINE (keeping DIGESTS that come first)."""
        while True:
            mtype, payload = self._recv_digest_stream()
            if mtype == P.FINE:
                return self._on_fine(payload, hasher, state)
            self._early.append(payload)

    def _compare_chunk(self, mode, off, data, bs, hasher, state):
        payload = self._next_digests(hasher, state)
        if len(payload) < P.U64U32.size:
            raise ProtocolError("DIGESTS record: expected 12+ bytes, got %d" % len(payload))
        doff, dlen = P.U64U32.unpack_from(payload)
        n = len(data)
        nblocks = -(-n // bs)
        dsize = len(hasher(b""))
        if doff != off or dlen != n or len(payload) != P.U64U32.size + nblocks * dsize:
            raise ProtocolError("DIGESTS record: expected offset %d, %d bytes, %d digests; got %d, %d, %d bytes"
                                % (off, n, nblocks, doff, dlen, len(payload) - P.U64U32.size))
        mv = memoryview(data)
        mine = b"".join(hasher(mv[i:i + bs]) for i in range(0, n, bs))
        theirs = bytes(payload[P.U64U32.size:])    # bytes compare with memcmp; a memoryview would not
        if theirs == mine:
            return
        flags = [theirs[k * dsize:(k + 1) * dsize] != mine[k * dsize:(k + 1) * dsize] for k in range(nblocks)]
        if self.fine:
            blocks = [(off + k * bs, min(bs, n - k * bs)) for k, differs in enumerate(flags) if differs]
            # copies: the chunk's buffer is not held while the answer travels
            held = [_raw(mv[b - off:b - off + length]) for b, length in blocks]
            self.chan.send(P.REFINE, refine.pack_request(blocks))
            sent = P.HEADER.size + len(blocks) * refine.ENTRY.size
            self.digest_bytes += sent
            self._inflight.append(_Refinement(mode, blocks, held))
            self._inflight_bytes += sum(length for _, length in blocks)
            while self._inflight_bytes > REFINE_WINDOW:
                self._await_fine(hasher, state)
            return
        for first, count in plan.runs(flags):
            a, b = first * bs, min(n, (first + count) * bs)
            self._differ(mode, off, mv, a, b, bs, state)

    def _differ(self, mode, off, mv, a, b, bs, state):
        """``mv[a:b]`` (at disk offset ``off``) differs from the target: send it, or note it (verify)."""
        if mode == "verify":
            diff = state["differing"]
            if diff and diff[-1][1] == off + a:       # keep it merged: memory stays small
                diff[-1] = (diff[-1][0], off + b)
            else:
                diff.append((off + a, off + b))
            self._count(state, off + a, off + b)
        else:
            if plan.covers(self._recheck, off + a):   # a piece never straddles the finished ranges' edge
                state["resent"] += b - a
            self._send_range(off + a, mv[a:b], bs, state)

    def _on_fine(self, payload, hasher, state):
        """Compare a FINE answer with the source blocks it refines; send what differs."""
        if not self._inflight:
            raise ProtocolError("FINE record: expected none (no REFINE awaits an answer), got one")
        req = self._inflight.popleft()
        self._inflight_bytes -= sum(length for _, length in req.blocks)
        fine = self.fine
        dsize = len(hasher(b""))
        theirs = refine.split_answer(payload, req.blocks, fine, dsize)
        pos = 0
        run = []             # pieces (disk offset, memoryview) of one contiguous differing run
        for (boff, length), data in zip(req.blocks, req.held):
            mv = memoryview(data)
            k = refine.count(length, fine)
            mine = b"".join(hasher(mv[i:i + fine]) for i in range(0, length, fine))
            them = theirs[pos:pos + k * dsize]
            pos += k * dsize
            flags = [mine[i * dsize:(i + 1) * dsize] != them[i * dsize:(i + 1) * dsize] for i in range(k)]
            if not any(flags):
                flags = [True] * k   # the coarse digests differ: never trust the fine ones over them
            for first, count in plan.runs(flags):
                a, b = first * fine, min(length, (first + count) * fine)
                if run and run[-1][0] + len(run[-1][1]) != boff + a:
                    self._send_run(req.mode, run, fine, state)
                    run = []
                run.append((boff + a, mv[a:b]))
        if run:
            self._send_run(req.mode, run, fine, state)

    def _send_run(self, mode, run, fine, state):
        """One contiguous differing run, across the blocks of a FINE answer, as
        few records as possible (bigger records compress better)."""
        start = run[0][0]
        data = run[0][1] if len(run) == 1 else memoryview(b"".join(piece.tobytes() for _, piece in run))
        self._differ(mode, start, data, 0, len(data), fine, state)

    def bye(self):
        """End the connection, and wait (briefly) until the receiver has
        released the target and closed: a caller's next resync of the same
        target then does not find it still held by this one."""
        try:
            self.chan.send(P.BYE)
        except ResyncError:
            return
        self.chan.wait_closed(BYE_WAIT)
