"""Public API of the resync engine (what failback, the simulator and the CLI call).

``resync(src, dest, mode="auto", extents=None, tracker=None, rate=None,
verify=False, discard_target=False, ssh="ssh", key_file=None, events=None,
block_size=65536, progress=False, resume=True, strong=False)``
    Bring ``dest`` up to date from ``src`` (the authoritative copy).
    ``dest``: a local path, ``HOST:PATH`` (receiver started through ssh) or
    ``tcp://HOST:PORT/EXPORT``.  Modes: ``tracked`` (send exactly
    ``extents`` / ``tracker.dirty_extents()``), ``checksum`` (receiver streams
    keyed digests, only differing blocks are sent), ``full`` (everything;
    zero blocks become holes), ``auto`` (tracked when extents are given or
    ``tracker.trustworthy()`` and the target's generation is the one the
    tracking started from; checksum otherwise).  ``rate``: bytes/s cap.
    ``events``: callable receiving dicts (the ``--json`` stream; the last
    one is the result object).  The engine reads ``tracker`` (``trustworthy``,
    ``dirty_extents``) and never calls its ``mark``/``clear``: the caller
    decides when synced extents are forgotten.  :returns: :class:`ResyncResult`.
    :raises SplitBrainError: the target holds writes the source never saw
    (unless ``discard_target``); :raises ResyncError: anything else.

``verify(src, dest, rate=None, ssh="ssh", key_file=None, events=None,
block_size=65536, strong=False, progress=False)``
    Compare both copies by keyed digests (read-only on both ends, usable
    online with ``rate``).  :returns: :class:`VerifyResult`.

``serve(listen, key_file, exports)``
    Run a TCP receiver (``xen-remus receive --listen``) until interrupted.
    For a background receiver use :class:`ResyncServer` (``.start()``,
    ``.address``, ``.stop()``).

``bytes_read`` counts both ends' disk reads; ``bytes_sent`` everything
that crossed the transport, both directions, headers included.
"""
from __future__ import absolute_import, division, print_function

import collections
import contextlib
import logging
import os
import stat
import sys
import time

from xen_remus_ext.compat import stderr_isatty
from xen_remus_ext.errors import (JournalError, ProtocolError, ResyncError, SplitBrainError, ValidationError,
                                  XenRemusError)
from xen_remus_ext.model import Extent
from xen_remus_ext.resync import digest as dg
from xen_remus_ext.resync import meta, plan
from xen_remus_ext.resync.blockio import BlockFile
from xen_remus_ext.resync.receiver import check_block_size
from xen_remus_ext.resync.sender import SenderSession
from xen_remus_ext.resync.transport import ResyncServer, connect, parse_dest

LOG = logging.getLogger(__name__)

MODES = ("auto", "tracked", "checksum", "full")

ResyncResult = collections.namedtuple("ResyncResult",
                                      "mode bytes_read bytes_sent extents seconds verified digest_bytes")
VerifyResult = collections.namedtuple("VerifyResult", "identical differing bytes_read seconds")

__all__ = ["resync", "verify", "serve", "ResyncResult", "VerifyResult", "ResyncServer"]


class _Progress(object):
    """Turns engine progress into ``events`` dicts and a tqdm bar on a tty."""

    def __init__(self, events, bar, phase):
        self.events = events
        self.bar = None
        self.phase = phase
        self.last = 0.0
        self.t0 = time.time()
        self.shown = 0
        self.want_bar = bool(bar) and stderr_isatty()

    def _make_bar(self, total):
        try:
            from tqdm import tqdm
        except ImportError:  # pragma: no cover - tqdm is a dependency
            self.want_bar = False
            return
        self.bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024,
                        desc=self.phase, file=sys.stderr, leave=False)

    def __call__(self, done, total, wire):
        if self.want_bar:
            if self.bar is None:
                self._make_bar(total)
            if self.bar is not None:
                self.bar.update(done - self.shown)
                self.shown = done
        now = time.time()
        if self.events is not None and (now - self.last >= 0.5 or done == total):
            self.last = now
            el = max(now - self.t0, 1e-6)
            rate = done / el
            self.events({"event": "progress", "phase": self.phase, "done": done, "total": total,
                         "bytes_sent": wire, "rate": int(rate),
                         "eta": round((total - done) / rate, 1) if rate > 0 else None})

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _emit(events, obj):
    if events is not None:
        events(obj)


def _source(src):
    with BlockFile(src) as f:
        size = f.size
    m = meta.ensure(src, size)
    if not m.consistent:
        raise ResyncError("%s: source is marked inconsistent (an interrupted resync target); "
                          "refusing it as a resync source" % src)
    if m.size != size:
        m = meta.save(m._replace(size=size))
    return size, m


def refuse_same_copy(src, dest):
    """Refuse a local ``dest`` that is ``src`` itself (the same file or block
    device through any path, symlink or hard link), before either side's
    metadata is read or written.

    :raises ResyncError: they are one copy.
    """
    if parse_dest(dest)[0] != "local":
        return
    try:
        a, b = os.stat(src), os.stat(dest)
    except OSError:
        return   # a missing side is reported by the steps that need it
    if stat.S_ISBLK(a.st_mode) and stat.S_ISBLK(b.st_mode):
        same = a.st_rdev == b.st_rdev
    else:
        same = (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    if same:
        raise ResyncError("%s: expected a different copy than the source %s, got the same %s "
                          "(device %d, inode %d); refusing to resync a disk onto itself"
                          % (dest, src, "block device" if stat.S_ISBLK(a.st_mode) else "file",
                             a.st_dev, a.st_ino))


def _handshake(sess, conn):
    try:
        return sess.handshake()
    except ProtocolError as exc:
        hint = conn.failure_hint()
        if hint:
            raise ResyncError("%s: %s (%s)" % (conn.describe, hint, exc))
        raise


def _choose_mode(mode, extents, tracker, relation, src_meta, dst_meta):
    if mode != "auto":
        return mode
    lineage_ok = dst_meta is not None and dst_meta.current in (src_meta.current, src_meta.bitmap)
    if lineage_ok and (extents is not None or (tracker is not None and tracker.trustworthy())):
        return "tracked"
    return "checksum"


def resync(src, dest, mode="auto", extents=None, tracker=None, rate=None, verify=False,
           discard_target=False, ssh="ssh", key_file=None, events=None, block_size=65536,
           progress=False, resume=True, strong=False):
    """See the module docstring.  :returns: :class:`ResyncResult`."""
    t0 = time.time()
    if mode not in MODES:
        raise ValidationError("resync mode: expected one of %s, got %r" % (", ".join(MODES), mode))
    check_block_size(block_size)
    LOG.info("resync start: %s -> %s, mode %s%s", src, dest, mode, ", discarding the target's writes"
             if discard_target else "")
    try:
        refuse_same_copy(src, dest)
        size, src_meta = _source(src)
        conn = connect(dest, ssh=ssh, key_file=key_file,
                       local_process=_local_mode(dest, mode, extents, tracker, src_meta) == "checksum")
        try:
            with _receiver_faults(dest):
                res, bytes_read, wire, chosen, verified = _run_resync(
                    conn, src, dest, size, src_meta, mode, extents, tracker, rate, verify, discard_target,
                    events, block_size, progress, resume, strong)
        finally:
            conn.close()
    except (Exception, KeyboardInterrupt) as exc:   # the audit line, then the caller's handling
        LOG.info("resync end: %s -> %s: %s: %s", src, dest,
                 "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc)
        raise
    result = ResyncResult(chosen, bytes_read, wire, res["extents"], round(time.time() - t0, 3), verified,
                          res["digest_bytes"])
    LOG.info("resync end: %s -> %s: ok, %s mode, generation %s, %d bytes read, %d bytes sent, %.2f s%s",
             src, dest, chosen, src_meta.current, bytes_read, wire, result.seconds,
             ", verified" if verified else "")
    _emit(events, {"result": "ok", "mode": result.mode, "bytes_read": result.bytes_read,
                   "bytes_sent": result.bytes_sent, "digest_bytes": result.digest_bytes, "extents": result.extents,
                   "seconds": result.seconds, "verified": result.verified})
    return result


def _local_mode(dest, mode, extents, tracker, src_meta):
    """The mode a local ``dest`` will get (its metadata is on this host), so
    that the receiver can be started the way that mode runs fastest."""
    if parse_dest(dest)[0] != "local":
        return None
    try:
        dst_meta = meta.load(dest)
    except JournalError:
        dst_meta = None
    return _choose_mode(mode, extents, tracker, None, src_meta, dst_meta)


@contextlib.contextmanager
def _receiver_faults(dest):
    """A reply of a shape no check foresaw is the receiver's fault: say so."""
    try:
        yield
    except XenRemusError:
        raise
    except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
        raise ProtocolError("%s: malformed record from the receiver: %s: %s" % (dest, type(exc).__name__, exc))


def _run_resync(conn, src, dest, size, src_meta, mode, extents, tracker, rate, verify, discard_target,
                events, block_size, progress, resume, strong):
    sess = SenderSession(conn, events=events)
    info = _handshake(sess, conn)
    if info.get("size") != size:
        raise ResyncError("%s: sizes differ: source %s has %d bytes, target has %s"
                          % (dest, src, size, info.get("size")))
    dst_meta = meta.DiskMeta.from_dict(info["meta"]) if info.get("meta") else None
    relation = meta.compare(src_meta, dst_meta)
    if relation not in meta.SAFE:
        if not discard_target:
            cls = SplitBrainError if relation == meta.SPLIT_BRAIN else ResyncError
            raise cls("%s: target is %s relative to source %s (target generation %s, source %s); "
                      "refusing: name the loser with --discard-target to overwrite it"
                      % (dest, relation, src, dst_meta.current if dst_meta else None, src_meta.current))
        LOG.warning("%s: target is %s; discarding its writes as asked", dest, relation)
    chosen = _choose_mode(mode, extents, tracker, relation, src_meta, dst_meta)
    if chosen == "tracked":
        if extents is None:
            if tracker is None:
                raise ResyncError("tracked mode: expected dirty extents or a tracker, got neither")
            extents = tracker.dirty_extents()
        work = plan.extents_to_intervals(extents, size)
    else:
        work = [(0, size)] if size else []
    _emit(events, {"event": "start", "src": src, "dest": dest, "mode": chosen, "size": size,
                   "relation": relation, "work": plan.total(work), "source_generation": src_meta.current})
    digest = sess.pick_digest(strong) if chosen == "checksum" else None
    bar = _Progress(events, progress, chosen)
    sess.report = bar
    try:
        res = sess.run_phase(chosen, src, src_meta, work, bs=block_size, rate=rate, digest=digest,
                             discard_target=discard_target, resume=resume, commit=None if verify else True)
    finally:
        bar.close()
    bytes_read = res["bytes_read"]
    verified = False
    if verify:
        _emit(events, {"event": "phase", "phase": "verify"})
        bar = _Progress(events, progress, "verify")
        sess.report = bar
        try:
            vres = sess.run_phase("verify", src, src_meta, [(0, size)] if size else [], bs=block_size,
                                  rate=rate, digest=sess.pick_digest(strong),
                                  commit=lambda state: not state["differing"])
        finally:
            bar.close()
        bytes_read += vres["bytes_read"]
        res["digest_bytes"] = vres["digest_bytes"]
        if vres["differing"]:
            raise ResyncError("%s: verify after resync found %d differing extent(s), first at %d; "
                              "target left inconsistent" % (dest, len(vres["differing"]),
                                                            vres["differing"][0].offset))
        verified = True
    sess.bye()
    wire = conn.chan.bytes_out + conn.chan.bytes_in
    return res, bytes_read, wire, chosen, verified


def verify(src, dest, rate=None, ssh="ssh", key_file=None, events=None, block_size=65536,
           strong=False, progress=False):
    """See the module docstring.  :returns: :class:`VerifyResult`."""
    t0 = time.time()
    check_block_size(block_size)
    with BlockFile(src) as f:
        size = f.size
    src_meta = meta.load(src) or meta.DiskMeta(src, size, True)
    LOG.info("verify start: %s against %s", src, dest)
    try:
        conn = connect(dest, ssh=ssh, key_file=key_file, local_process=True)
        try:
            with _receiver_faults(dest):
                res = _run_verify(conn, src, dest, size, src_meta, rate, events, block_size, strong, progress)
        finally:
            conn.close()
    except (Exception, KeyboardInterrupt) as exc:   # the audit line, then the caller's handling
        LOG.info("verify end: %s against %s: %s: %s", src, dest,
                 "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc)
        raise
    result = VerifyResult(not res["differing"], res["differing"], res["bytes_read"], round(time.time() - t0, 3))
    LOG.info("verify end: %s against %s: %s, %d bytes read, %.2f s", src, dest,
             "identical" if result.identical else "%d extent(s) differ" % len(result.differing),
             result.bytes_read, result.seconds)
    _emit(events, {"result": "ok" if result.identical else "differ", "identical": result.identical,
                   "differing": [[e.offset, e.length] for e in result.differing],
                   "bytes_read": result.bytes_read, "seconds": result.seconds})
    return result


def _run_verify(conn, src, dest, size, src_meta, rate, events, block_size, strong, progress):
    sess = SenderSession(conn)
    info = _handshake(sess, conn)
    if info.get("size") != size:
        raise ResyncError("%s: sizes differ: source %s has %d bytes, target has %s"
                          % (dest, src, size, info.get("size")))
    _emit(events, {"event": "start", "src": src, "dest": dest, "mode": "verify", "size": size,
                   "work": size})
    bar = _Progress(events, progress, "verify")
    sess.report = bar
    try:
        res = sess.run_phase("verify", src, src_meta._replace(size=size), [(0, size)] if size else [],
                             bs=block_size, rate=rate, digest=sess.pick_digest(strong), commit=None)
    finally:
        bar.close()
    sess.bye()
    return res


def serve(listen, key_file, exports, ready=None):
    """Run a TCP receiver in this thread until KeyboardInterrupt.

    :param ready: optional callable receiving the bound ``(addr, port)``.
    """
    server = ResyncServer(listen, key_file, exports)
    if ready is not None:
        ready(server.address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return server


def digests_available():
    return dg.available()


def extents_from_pairs(pairs):
    return [Extent(int(a), int(b)) for a, b in pairs]
