"""The receiving end of a resync: owns the stale copy, answers the sender.

:class:`Receiver` runs one connection (any :class:`protocol.Channel`):
handshake (version, digests, HMAC challenge-response when a key is set),
then sessions (``START`` ... ``END``) until ``BYE`` or EOF.  It writes only
the exports of its own configuration, never a path the peer names.

Safety order for a writing session: the target's metadata is marked
inconsistent before the first write; at every ``MARK`` the target is
fdatasync'd before the journal names the ranges; only after the final
fdatasync does ``END {"commit": true}`` give the target the source's
generation (:func:`meta.mark_synced`).
"""
from __future__ import absolute_import, division, print_function

import hashlib
import hmac
import logging
import os
import threading

from six.moves import queue

from xen_remus_ext.compat import integer_types, string_types, to_bytes, to_text
from xen_remus_ext.errors import ProtocolError, ResyncError, SplitBrainError, ValidationError, XenRemusError
from xen_remus_ext.resync import compress as cz
from xen_remus_ext.resync import digest as dg
from xen_remus_ext.resync import journal as jn
from xen_remus_ext.resync import meta, plan
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync import refine
from xen_remus_ext.resync.protocol import check_block_size, field, hexb, is_int, mac, unhexb
from xen_remus_ext.resync.blockio import BlockFile
from xen_remus_ext.resync.ratelimit import TokenBucket

LOG = logging.getLogger(__name__)

WRITE_MODES = ("checksum", "full", "tracked")
MODES = WRITE_MODES + ("verify",)


class Receiver(object):
    """One connection's receiving end.

    :param chan: a :class:`protocol.Channel`.
    :param exports: dict ``name -> path`` this receiver may write.
    :param key: bytes; when set, the peer must prove it holds the key.
    :param after_handshake: called once the peer is authenticated.
    :param binding: under TLS, the fingerprint of this receiver's
        certificate: the authentication covers it (see :mod:`resync.tls`).
    """

    def __init__(self, chan, exports, key=None, after_handshake=None, binding=b""):
        self.after_handshake = after_handshake
        self.binding = binding
        self.chan = chan
        self.exports = dict(exports)
        self.key = key
        self.base_key = b""
        self.path = None
        self.wrote_phase = None   # source meta of a completed write phase awaiting commit
        self.held = None          # the target, locked from the first session until the connection ends
        self.version = 1          # the protocol version the handshake agreed

    # -- handshake --------------------------------------------------------
    def handshake(self):
        _, hello = self.chan.recv_json(P.HELLO)
        if hello.get("magic") != P.MAGIC:
            raise ProtocolError("HELLO: expected magic %r, got %r" % (P.MAGIC, hello.get("magic")))
        versions = [v for v in field(hello, "HELLO", "versions", list, []) if is_int(v) and v in P.VERSIONS]
        if not versions:
            raise ProtocolError("HELLO: expected a version in %s, got %r" % (list(P.VERSIONS), hello.get("versions")))
        digests = [d for d in field(hello, "HELLO", "digests", list, []) if d in dg.available()]
        nonce_c = unhexb("HELLO nonce", field(hello, "HELLO", "nonce", string_types, ""))
        if len(nonce_c) < 16:
            raise ProtocolError("HELLO: expected a nonce of 16+ bytes, got %d" % len(nonce_c))
        nonce_s = os.urandom(16)
        export = to_text(field(hello, "HELLO", "export", string_types, ""))
        version = self.version = max(versions)
        reply = {"magic": P.MAGIC, "version": version, "digests": digests,
                 "nonce": hexb(nonce_s), "auth": "hmac-sha256" if self.key else None}
        codec = cz.choose(hello.get("compress")) if version >= 2 else None
        if version >= 2:
            reply["compress"] = codec
        self.chan.send_json(P.HELLO, reply)
        if codec is not None:
            self.chan.codec = cz.make(codec, sending=False)
        if self.key:
            _, auth = self.chan.recv_json(P.AUTH)
            tls = (self.binding,) if self.binding else ()
            want = mac(self.key, "client", nonce_s, nonce_c, to_bytes(export), *tls)
            got = unhexb("AUTH mac", field(auth, "AUTH", "mac", string_types, ""))
            if not hmac.compare_digest(want, got):
                raise ProtocolError("authentication failed: the sender does not hold this receiver's key%s"
                                    % (", or it saw another TLS certificate than this receiver's (a man in "
                                       "the middle?)" if tls else ""))
            self.chan.send_json(P.AUTH, {"mac": hexb(mac(self.key, "server", nonce_c, nonce_s, *tls))})
            self.base_key = mac(self.key, "session", nonce_s, nonce_c)
        if export not in self.exports:
            raise ResyncError("export %r: expected one of this receiver's exports, got an unknown name" % export)
        self.path = self.exports[export]
        if not os.path.exists(self.path):
            raise ResyncError("%s: target does not exist" % self.path)
        with BlockFile(self.path) as f:
            size = f.size
        m = meta.load(self.path)
        j = jn.Journal.load(self.path)
        self.size = size
        self.chan.send_json(P.INFO, {"size": size, "path": self.path,
                                     "meta": m.to_dict() if m else None,
                                     "journal": j.key() if j else None,
                                     "stamp": meta.file_stamp(self.path)})

    # -- main loop --------------------------------------------------------
    def run(self):
        """Serve the connection; errors go to the peer as ERROR, then close.

        :returns: None; :raises XenRemusError: after reporting it to the peer.
        """
        try:
            self._serve()
        except XenRemusError as exc:
            # the one log line of a refused or failed connection (the TCP server adds only its audit line)
            LOG.warning("receiver %s: %s: %s", self.path or "(handshake)", getattr(self.chan, "peer", "sender"), exc)
            self.chan.send_error(str(exc), code=getattr(exc, "code", None))
            raise
        except Exception as exc:
            # a bug of ours, not the peer's: tell the peer it was internal, keep the traceback
            self.chan.send_error("receiver internal error: %s: %s" % (type(exc).__name__, exc))
            raise
        finally:
            self._release()          # before the close: a sender that saw us close finds the target free
            self.chan.close()

    def _hold(self, writing):
        """Lock the target for the rest of the connection: exclusively from
        the first writing session on (its verify phase included, so no other
        sender can write between a write phase and the verify that commits
        it), shared for a read-only connection.  :returns: the open target.

        :raises TargetBusyError: another connection holds it.
        """
        if self.held is not None and (self.held.write or not writing):
            return self.held
        self._release()          # a shared hold becomes exclusive (another writer may win meanwhile)
        self.held = BlockFile(self.path, write=True, exclusive=True) if writing else \
            BlockFile(self.path, shared=True)
        return self.held

    def _release(self):
        if self.held is not None:
            self.held.close()
            self.held = None

    def _serve(self):
        self.handshake()
        if self.after_handshake is not None:
            self.after_handshake()
        while True:
            try:
                mtype, payload = self.chan.recv()
            except ProtocolError:
                LOG.info("receiver %s: sender went away", self.path)
                return
            if mtype == P.BYE:
                return
            if mtype == P.ERROR:
                P.raise_peer_error(payload)
            if mtype != P.START:
                raise ProtocolError("expected START or BYE record, got %s" % P.type_name(mtype))
            self.session(P.decode_json(mtype, payload))

    def session(self, start):
        mode = field(start, "START", "mode", string_types, None)
        if mode not in MODES:
            raise ProtocolError("START: expected mode in %s, got %r" % (", ".join(MODES), mode))
        bs = field(start, "START", "block_size", integer_types, None)
        check_block_size(bs)
        try:
            src = meta.DiskMeta.from_dict(field(start, "START", "source", dict, {}))
        except ValidationError as exc:
            raise ProtocolError("START source: %s" % exc)
        if src.size != self.size:
            raise ResyncError("%s: sizes differ: source has %d bytes, target %d" % (self.path, src.size, self.size))
        salt = unhexb("START salt", field(start, "START", "salt", string_types, ""))
        dname = field(start, "START", "digest", string_types, None)
        resume = field(start, "START", "resume", bool, False)
        writing = mode in WRITE_MODES
        # a resumed write phase has its finished ranges compared again (version 3): it needs digests too
        recheck = writing and resume and self.version >= 3 and dname is not None
        hasher = dg.make(dname, hmac.new(self.base_key, b"digest|" + salt, hashlib.sha256).digest()) \
            if mode in ("checksum", "verify") or recheck else None
        rate = TokenBucket(P.check_rate(field(start, "START", "rate", integer_types + (float,), 0), "START rate"))
        fine = field(start, "START", "fine", integer_types, 0) if mode in ("checksum", "verify") else 0
        refine.check_fine(fine, bs)
        discard = field(start, "START", "discard_target", bool, False)
        target = self._hold(writing)     # before the generations are read: they must not change under us
        mine = meta.load(self.path)
        if writing:
            rel = meta.compare(src, mine)
            if rel not in meta.SAFE and not discard:
                cls = SplitBrainError if rel == meta.SPLIT_BRAIN else ResyncError
                raise cls("%s: target is %s relative to the source; refusing without --discard-target"
                          % (self.path, rel))
        if mode == "tracked":
            why = meta.tracked_refusal(src, mine)
            if why:
                raise ResyncError("%s: tracked mode refused: %s; use checksum or full mode" % (self.path, why))
        out = target if writing else None
        written = out.bytes_written if out else 0
        done = []
        jour = None
        if writing:
            old = jn.Journal.load(self.path)
            jour = jn.Journal(self.path, self.size, src.current, mode, bs)
            if recheck and old is not None and old.key() == jour.key():
                # offered to be compared again, never to be skipped: the source
                # may have changed since without its generation changing
                jour.done = old.done
                done = old.done
            meta.mark_inconsistent(self.path, self.size)
            jour.save()
        self.chan.send_json(P.START, {"ok": True, "done": [list(p) for p in done]})
        ranges = []
        if mode in ("checksum", "verify") or done:
            while True:
                mtype, payload = self.chan.recv()
                if mtype == P.ERROR:
                    P.raise_peer_error(payload)
                if mtype != P.RANGES:
                    raise ProtocolError("expected RANGES record, got %s" % P.type_name(mtype))
                if not len(payload):
                    break
                ranges.extend(P.unpack_ranges(payload, self.size))
        digester = None
        if ranges:
            digester = _Digester(self.chan, self.path, plan.normalize(ranges), bs, hasher, rate)
            digester.start()
        syncer = _Syncer(out, jour) if writing else None
        if syncer is not None:
            syncer.start()
        refiner = _Refiner(self.chan, self.path, self.size, bs, fine, hasher) if fine else None
        if refiner is not None:
            refiner.start()
        try:
            end = self._apply(out, syncer, refiner)
        except BaseException:
            if digester is not None:
                digester.abandon()
            if refiner is not None:
                refiner.abandon()
            if syncer is not None:
                syncer.finish()
            raise
        if digester is not None:
            digester.join()
        if refiner is not None:
            refiner.finish()
            if refiner.error is not None:
                raise refiner.error
        if syncer is not None:
            syncer.finish()
            if syncer.error is not None:
                raise syncer.error
        read = (digester.bytes_read if digester else 0) + (refiner.bytes_read if refiner else 0)
        if digester is not None and digester.error is not None:
            raise digester.error
        if out is not None:
            out.sync()
        commit = field(end, "END", "commit", bool, None)
        if writing:
            self.wrote_phase = src
        if commit is True and self.wrote_phase is not None:
            meta.mark_synced(self.path, self.wrote_phase, stamp=meta.file_stamp(self.path))
            jn.remove(self.path)
            self.wrote_phase = None
        elif commit is False and not writing and self.wrote_phase is not None:
            jn.remove(self.path)   # a failed verify: nothing in the journal is trusted
            self.wrote_phase = None
        self.chan.send_json(P.RESULT, {"ok": True, "bytes_read": read,
                                       "bytes_written": out.bytes_written - written if out else 0,
                                       "committed": commit is True})

    def _apply(self, out, syncer, refiner=None):
        """Apply DATA/ZERO/MARK records (and pass REFINE on) until END; :returns: END's object."""
        while True:
            mtype, payload = self.chan.recv()
            if mtype == P.REFINE:
                if refiner is None:
                    raise ProtocolError("REFINE record in a session without fine digests")
                refiner.ask(payload)
            elif mtype == P.DATA:
                if out is None:
                    raise ProtocolError("DATA record in a read-only (verify) session")
                off, data = P.split_data(payload)
                if off + len(data) > self.size:
                    raise ProtocolError("DATA record: expected to end within %d bytes, got %d+%d"
                                        % (self.size, off, len(data)))
                out.write_at(off, data)
            elif mtype == P.ZERO:
                if out is None:
                    raise ProtocolError("ZERO record in a read-only (verify) session")
                if len(payload) != P.U64U64.size:
                    raise ProtocolError("ZERO record: expected 16 bytes, got %d" % len(payload))
                off, n = P.U64U64.unpack(bytes(payload))
                if off + n > self.size:
                    raise ProtocolError("ZERO record: expected to end within %d bytes, got %d+%d"
                                        % (self.size, off, n))
                out.zero_range(off, n)
            elif mtype == P.MARK:
                if syncer is None:
                    raise ProtocolError("MARK record in a read-only (verify) session")
                syncer.mark(P.unpack_ranges(payload, self.size))
            elif mtype == P.END:
                return P.decode_json(mtype, payload)
            elif mtype == P.ERROR:
                P.raise_peer_error(payload)
            else:
                raise ProtocolError("expected DATA, ZERO, MARK or END record, got %s" % P.type_name(mtype))


class _Digester(threading.Thread):
    """Reads the target over ``ranges`` and streams DIGESTS, one per chunk."""

    def __init__(self, chan, path, ranges, bs, hasher, rate):
        threading.Thread.__init__(self, name="xre-digest")
        self.daemon = True
        self.chan = chan
        self.path = path
        self.ranges = ranges
        self.bs = bs
        self.hasher = hasher
        self.rate = rate
        self.error = None
        self.bytes_read = 0
        self._halt = False

    def run(self):
        try:
            with BlockFile(self.path) as f:
                bs, h = self.bs, self.hasher
                for off, length in plan.chunks(self.ranges):
                    if self._halt:
                        return
                    self.rate.consume(length)
                    data = f.read_exactly(off, length)
                    mv = memoryview(data)
                    ds = [h(mv[i:i + bs]) for i in range(0, length, bs)]
                    self.chan.send(P.DIGESTS, P.U64U32.pack(off, length), b"".join(ds))
                self.bytes_read = f.bytes_read
        except XenRemusError as exc:
            self.error = exc
            self.chan.send_error(str(exc), code=getattr(exc, "code", None))
            self.chan.close()

    def abandon(self):
        """Stop at the next chunk without waiting (the connection is failing)."""
        self._halt = True


class _Refiner(threading.Thread):
    """Answers REFINE requests with FINE digests, in order, off the receive
    path: the receive thread never blocks on sending, so neither end can
    wait on the other with both pipes full.  Its reads are not charged to
    the rate: they re-read blocks the digester has just read (the page
    cache has them), and a starved refiner would hold back every write."""

    _END = object()

    def __init__(self, chan, path, size, bs, fine, hasher):
        threading.Thread.__init__(self, name="xre-refine")
        self.daemon = True
        self.chan = chan
        self.path = path
        self.size = size
        self.bs = bs
        self.fine = fine
        self.hasher = hasher
        self.q = queue.Queue()
        self.error = None
        self.bytes_read = 0

    def ask(self, payload):
        """Queue one REFINE payload (checked here, in the receive thread)."""
        if self.error is not None:
            raise self.error
        blocks = refine.unpack_request(payload, self.size, self.bs)
        self.q.put((bytes(payload), blocks))

    def run(self):
        try:
            with BlockFile(self.path) as f:
                fine, h = self.fine, self.hasher
                while True:
                    item = self.q.get()
                    if item is self._END:
                        return
                    payload, blocks = item
                    ds = []
                    for off, n in blocks:
                        mv = memoryview(f.read_exactly(off, n))
                        self.bytes_read += n
                        ds.extend(h(mv[i:i + fine]) for i in range(0, n, fine))
                    self.chan.send(P.FINE, refine.pack_answer(payload, b"".join(ds)))
        except XenRemusError as exc:
            self.error = exc
            self.chan.send_error(str(exc), code=getattr(exc, "code", None))
            self.chan.close()

    def finish(self):
        """Answer what is queued, then stop (call once, from the receive thread)."""
        self.q.put(self._END)
        self.join()

    def abandon(self):
        """Stop after the current answer without waiting (the connection is failing)."""
        self.q.put(self._END)


class _Syncer(threading.Thread):
    """Makes MARKed ranges durable off the receive path: fdatasync the
    target, then record the ranges in the journal (in that order)."""

    _END = object()

    def __init__(self, out, jour):
        threading.Thread.__init__(self, name="xre-sync")
        self.daemon = True
        self.out = out
        self.jour = jour
        self.q = queue.Queue()
        self.error = None

    def mark(self, ranges):
        if self.error is not None:
            raise self.error
        self.q.put(ranges)

    def run(self):
        while True:
            items = [self.q.get()]
            try:
                while True:
                    items.append(self.q.get_nowait())
            except queue.Empty:
                pass
            ended = any(i is self._END for i in items)
            ranges = [r for i in items if i is not self._END for r in i]
            if ranges and self.error is None:
                try:
                    self.out.sync()
                    for s, e in ranges:
                        self.jour.add(s, e)
                    self.jour.save()
                except (XenRemusError, IOError, OSError) as exc:
                    self.error = exc if isinstance(exc, XenRemusError) else \
                        ResyncError("%s: cannot write the resume journal: %s" % (self.out.path, exc))
            if ended:
                return

    def finish(self):
        """Flush pending marks and stop (call once, from the receive thread)."""
        self.q.put(self._END)
        self.join()
