"""Public API of the resync engine (what failback, the simulator and the CLI call).

``resync(src, dest, options=None, extents=None, tracker=None, events=None, **overrides)``
    Bring ``dest`` up to date from ``src`` (the authoritative copy).
    ``dest``: a local path, ``HOST:PATH`` (receiver started through ssh) or
    ``tcp://HOST:PORT/EXPORT``.  ``options``: a :class:`ResyncOptions`
    (``overrides`` replace its fields by name, e.g. ``mode="full"``).
    Modes: ``tracked`` (send exactly ``extents`` /
    ``tracker.dirty_extents()``; only into a consistent target holding the
    source's generation or its bitmap ancestor), ``checksum`` (receiver
    streams keyed digests, only differing blocks are sent), ``full``
    (everything; zero blocks become holes), ``auto`` (tracked when extents
    are given or ``tracker.trustworthy()`` and tracked is allowed for the
    target; checksum otherwise).  ``events``: callable receiving dicts (the
    ``--json`` stream; the last one is the result object).  The engine
    reads ``tracker`` (``trustworthy``, ``dirty_extents``) and never calls
    its ``mark``/``clear``: the caller decides when synced extents are
    forgotten.  :returns: :class:`ResyncResult`.
    :raises SplitBrainError: the target holds writes the source never saw
    (unless ``discard_target``); :raises ResyncError: anything else.

``prepare(dest, options=None, **overrides)``
    Open the transport to ``dest``'s receiver and do the handshake now
    (an ssh connection and the remote ``xen-remus receive`` start take
    about a second), so that a later ``resync(..., prepared=P)`` only
    plans and sends.  :returns: :class:`Prepared` (``close()`` it when
    unused).  A prepared connection found dead when used is replaced by a
    new one (logged), and a send that fails on it is retried once on a new
    one: the data always goes.

``verify(src, dest, options=None, events=None, **overrides)``
    Compare both copies by keyed digests (read-only on both ends, usable
    online with ``rate``; uses ``rate``, ``ssh``, ``key_file``,
    ``block_size``, ``strong`` and ``progress`` of the options).
    :returns: :class:`VerifyResult`.

``serve(listen, key_file, exports, cert=None, plaintext=False)``
    Run a TCP receiver (``xen-remus receive --listen``) until interrupted.
    For a background receiver use :class:`ResyncServer` (``.start()``,
    ``.address``, ``.stop()``).

``bytes_read`` counts both ends' disk reads; ``bytes_sent`` everything
that crossed the transport, both directions, headers included.
"""
from __future__ import absolute_import, division, print_function

import collections
import logging
import os
import stat
import sys
import time

from xen_remus_ext.compat import integer_types, stderr_isatty
from xen_remus_ext.errors import JournalError, ProtocolError, ResyncError, SplitBrainError, ValidationError
from xen_remus_ext.resync import compress as cz
from xen_remus_ext.resync import meta, plan
from xen_remus_ext.resync.blockio import BlockFile
from xen_remus_ext.resync.protocol import check_block_size, check_rate, field
from xen_remus_ext.resync.sender import SenderSession
from xen_remus_ext.resync.transport import ResyncServer, connect, parse_dest

LOG = logging.getLogger(__name__)

MODES = ("auto", "tracked", "checksum", "full")

#: ``resumed``: bytes an interrupted run had finished, compared again by digests (0 for a fresh
#: run); ``resent``: of those, bytes that differed (the source changed since) and were sent again
ResyncResult = collections.namedtuple("ResyncResult",
                                      "mode bytes_read bytes_sent extents seconds verified digest_bytes resumed "
                                      "resent")
VerifyResult = collections.namedtuple("VerifyResult", "identical differing bytes_read seconds")

__all__ = ["resync", "prepare", "Prepared", "verify", "serve", "ResyncOptions", "ResyncResult", "VerifyResult",
           "ResyncServer"]


#: the bar's width where the terminal reports none (a serial console, some emulators say 0 columns)
FALLBACK_COLUMNS = 80


def _bar_columns():
    """The width for the progress bar: the tty's, or :data:`FALLBACK_COLUMNS`
    when it reports 0 (tqdm would then draw no bar at all)."""
    try:
        import fcntl
        import struct
        import termios
        cols = struct.unpack("hhhh", fcntl.ioctl(sys.stderr.fileno(), termios.TIOCGWINSZ, b"\0" * 8))[1]
    except (IOError, OSError, ValueError, AttributeError):
        cols = 0
    return None if cols > 0 else FALLBACK_COLUMNS


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
                        desc=self.phase, file=sys.stderr, leave=False, ncols=_bar_columns())

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


class ResyncOptions(collections.namedtuple(
        "ResyncOptions",
        "mode rate verify discard_target ssh key_file block_size progress resume strong compress plaintext")):
    """How a resync (or a verify) runs; every field has a default.

    ``mode``: auto, tracked, checksum or full.  ``rate``: bytes/s cap of the
    disk reads (None or 0: none; else at least ``protocol.MIN_RATE``).
    ``verify``: compare every block after the sync.  ``discard_target``:
    the target may lose writes the source never saw.  ``ssh``: the command
    reaching ``HOST`` of ``HOST:PATH``.  ``key_file``: the shared key of a
    TCP receiver.  ``block_size``: digest block size.  ``progress``: a bar
    on a tty.  ``resume``: continue from the receiver's journal.
    ``strong``: HMAC-SHA256 digests instead of keyed xxh3-128.
    ``compress``: ``auto`` (zstd over ssh and TCP, none for a local
    target), ``zstd`` or ``none``.  ``plaintext``: a ``tcp://`` destination
    without TLS (TLS is the default; the receiver must allow plaintext).

    :raises ValidationError: a field out of its range.
    """

    __slots__ = ()

    def __new__(cls, mode="auto", rate=None, verify=False, discard_target=False, ssh="ssh", key_file=None,
                block_size=65536, progress=False, resume=True, strong=False, compress="auto", plaintext=False):
        if mode not in MODES:
            raise ValidationError("resync mode: expected one of %s, got %r" % (", ".join(MODES), mode))
        if compress not in cz.CHOICES:
            raise ValidationError("compress: expected one of %s, got %r" % (", ".join(cz.CHOICES), compress))
        if compress == cz.ZSTD and cz.ZSTD not in cz.available():
            raise ValidationError("compress zstd: the zstandard module is not installed on this host")
        try:
            check_block_size(block_size)
            if rate is not None:
                check_rate(rate)
        except ProtocolError as exc:
            raise ValidationError(str(exc))
        return super(ResyncOptions, cls).__new__(cls, mode, rate or None, bool(verify), bool(discard_target),
                                                 ssh, key_file, block_size, bool(progress), bool(resume),
                                                 bool(strong), compress, bool(plaintext))

    def replace(self, **fields):
        """A copy with ``fields`` replaced (validated, unlike ``_replace``).

        :raises TypeError: a name that is not a field.
        """
        unknown = sorted(set(fields) - set(self._fields))
        if unknown:
            raise TypeError("ResyncOptions: no field named %s" % ", ".join(unknown))
        d = self._asdict()
        d.update(fields)
        return ResyncOptions(**d)


def _options(options, overrides):
    if options is None:
        options = ResyncOptions()
    return options.replace(**overrides) if overrides else options


#: what one resync works on, besides its options
_Job = collections.namedtuple("_Job", "src dest size src_meta opts extents tracker events src_stamp")


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


def _naming(dest, exc):
    """``exc`` (the receiver broke the protocol), its message led by ``dest``."""
    return exc if str(exc).startswith(dest) else ProtocolError("%s: %s" % (dest, exc))


def _handshake(sess, conn):
    try:
        return sess.handshake()
    except (ProtocolError, ResyncError) as exc:
        # a send that failed (EPIPE) or a record cut short: an ssh that
        # exited says why better than the broken pipe does
        hint = conn.failure_hint()
        if hint:
            raise ResyncError("%s: %s (%s)" % (conn.describe, hint, exc))
        raise


def _choose_mode(mode, extents, tracker, src_meta, dst_meta):
    if mode != "auto":
        return mode
    if meta.tracked_allowed(src_meta, dst_meta) and (extents is not None or
                                                     (tracker is not None and tracker.trustworthy())):
        return "tracked"
    return "checksum"


class Prepared(object):
    """A connection to ``dest``'s receiver, handshake done, nothing sent yet
    (:func:`prepare`).  :attr:`seconds`: what opening it took."""

    def __init__(self, dest, conn, sess, info, seconds):
        self.dest = dest
        self.conn = conn
        self.sess = sess
        self.info = info
        self.seconds = seconds
        self.closed = False

    def dead(self):
        """:returns: None while usable, else why not (a sentence).  An idle
        receiver sends nothing: anything readable is its exit or an error."""
        if self.closed:
            return "already used or closed"
        proc = self.conn.proc
        if proc is not None and proc.poll() is not None:
            return "its receiver (%s) exited with status %s" % (" ".join(proc.args_shown), proc.returncode)
        check = getattr(self.conn.chan, "readable_now", None)
        if check is not None:
            try:
                ready = check()
            except (IOError, OSError, ValueError) as exc:
                return "its channel is unusable (%s)" % exc
            if ready:
                return "its receiver closed the connection or sent an unexpected record"
        return None

    def close(self):
        if not self.closed:
            self.closed = True
            self.conn.close()


def prepare(dest, options=None, **overrides):
    """See the module docstring.  :returns: :class:`Prepared`."""
    t0 = time.time()
    opts = _options(options, overrides)
    conn = connect(dest, ssh=opts.ssh, key_file=opts.key_file, plaintext=opts.plaintext)
    conn.compress = pick_codec(opts.compress, dest)
    try:
        sess = SenderSession(conn)
        info = _handshake(sess, conn)
    except ProtocolError as exc:
        conn.close()
        raise _naming(dest, exc)
    except BaseException:
        conn.close()
        raise
    seconds = round(time.time() - t0, 3)
    LOG.info("resync prepare: %s: connection open and handshake done in %.2f s", dest, seconds)
    return Prepared(dest, conn, sess, info, seconds)


def _check_local_target(dest):
    """A local ``dest`` must exist before a receiver is started for it.

    :raises ResyncError: it does not (named as the local target it is).
    """
    if parse_dest(dest)[0] == "local" and not os.path.exists(dest):
        raise ResyncError("%s: local target does not exist: expected an image file or block device of the "
                          "source's size (xen-remus meta create --size BYTES %s makes a sparse one)" % (dest, dest))


def _audited(what, run, *args, **kwargs):
    """``run(*args, **kwargs)``; a failure or an interruption first leaves its
    audit line (``what``: "resync end: SRC -> DEST"), then goes on to the caller."""
    try:
        return run(*args, **kwargs)
    except (Exception, KeyboardInterrupt) as exc:
        LOG.info("%s: %s: %s", what, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed", exc)
        raise


def _session(job, run, **connect_kw):
    """Connect to ``job.dest``'s receiver, ``run(conn, job)``, close.

    :returns: what ``run`` returns; a receiver that broke the protocol is named.
    """
    _check_local_target(job.dest)
    opts = job.opts
    conn = connect(job.dest, ssh=opts.ssh, key_file=opts.key_file, plaintext=opts.plaintext, **connect_kw)
    try:
        return run(conn, job)
    except ProtocolError as exc:
        raise _naming(job.dest, exc)
    finally:
        conn.close()


def resync(src, dest, options=None, extents=None, tracker=None, events=None, prepared=None, **overrides):
    """See the module docstring.  :returns: :class:`ResyncResult`."""
    t0 = time.time()
    opts = _options(options, overrides)
    LOG.info("resync start: %s -> %s, mode %s%s%s", src, dest, opts.mode, ", discarding the target's writes"
             if opts.discard_target else "", ", on the prepared connection" if prepared is not None else "")

    def run(prep):
        refuse_same_copy(src, dest)
        stamp = meta.file_stamp(src)       # before the first read: a write during the run changes it
        size, src_meta = _source(src)
        job = _Job(src, dest, size, src_meta, opts, extents, tracker, events, stamp)
        out = None
        if prep is not None:
            why = prep.dead() if prep.dest == dest else "it is for %s" % prep.dest
            if why is not None:
                LOG.warning("resync %s: the connection prepared before the suspend is not usable (%s); "
                            "opening a new one", dest, why)
                prep.close()
                prep = None
        if prep is not None:
            try:
                out = _run_prepared(prep, job)
            except (ProtocolError, ResyncError) as exc:
                if isinstance(exc, SplitBrainError) or "refusing" in str(exc):
                    raise
                LOG.warning("resync %s: the send on the prepared connection failed (%s); sending again on "
                            "a new one", dest, exc)
        if out is None:
            out = _session(job, _run_resync, local_process=_local_mode(job) == "checksum")
        meta.set_stamp(src, stamp, src_meta.current)
        return src_meta, out
    audit = "resync end: %s -> %s" % (src, dest)
    src_meta, (res, bytes_read, wire, chosen, verified, codec) = _audited(audit, run, prepared)
    result = ResyncResult(chosen, bytes_read, wire, res["extents"], round(time.time() - t0, 3), verified,
                          res["digest_bytes"], res["resumed"], res["resent"])
    LOG.info("resync end: %s -> %s: ok, %s mode, generation %s, %d bytes read, %d bytes sent, %.2f s%s%s",
             src, dest, chosen, src_meta.current, bytes_read, wire, result.seconds,
             ", verified" if verified else "",
             ", resumed (%d finished bytes compared again, %d of them sent again)"
             % (result.resumed, result.resent) if result.resumed else "")
    _emit(events, {"result": "ok", "mode": result.mode, "bytes_read": result.bytes_read,
                   "bytes_sent": result.bytes_sent, "digest_bytes": result.digest_bytes, "extents": result.extents,
                   "seconds": result.seconds, "verified": result.verified, "resumed": result.resumed,
                   "resent": result.resent, "compress": codec})
    return result


def pick_codec(compress, dest):
    """``compress`` (of :class:`ResyncOptions`) for ``dest`` -> the codec to offer, or None.

    ``auto``: zstd over ssh and TCP (when the zstandard module is there),
    none for a local target.
    """
    if compress == cz.ZSTD:
        return cz.ZSTD
    if compress == "auto" and parse_dest(dest)[0] != "local" and cz.ZSTD in cz.available():
        return cz.ZSTD
    return None


def _local_mode(job):
    """The mode a local ``dest`` will get (its metadata is on this host), so
    that the receiver can be started the way that mode runs fastest."""
    if parse_dest(job.dest)[0] != "local":
        return None
    try:
        dst_meta = meta.load(job.dest)
    except JournalError:
        dst_meta = None
    return _choose_mode(job.opts.mode, job.extents, job.tracker, job.src_meta, dst_meta)


def _target_meta(dest, info):
    """The target's metadata from the receiver's INFO (None: it has none)."""
    raw = field(info, "INFO", "meta", dict, None)
    if raw is None:
        return None
    try:
        return meta.DiskMeta.from_dict(raw)
    except ValidationError as exc:
        raise ProtocolError("%s: INFO record: %s" % (dest, exc))


def _check_size(dest, src, size, info):
    theirs = field(info, "INFO", "size", integer_types, None)
    if theirs != size:
        raise ResyncError("%s: sizes differ: source %s has %d bytes, target has %s" % (dest, src, size, theirs))


def _run_prepared(prepared, job):
    try:
        prepared.sess.events = job.events
        return _run_session(prepared.conn, prepared.sess, prepared.info, job)
    except ProtocolError as exc:
        raise _naming(job.dest, exc)
    finally:
        prepared.close()


def _run_resync(conn, job):
    """:returns: ``(phase result, bytes read, wire bytes, mode, verified, codec name or None)``."""
    conn.compress = pick_codec(job.opts.compress, job.dest)
    sess = SenderSession(conn, events=job.events)
    info = _handshake(sess, conn)
    return _run_session(conn, sess, info, job)


def _run_session(conn, sess, info, job):
    opts, dest, src_meta = job.opts, job.dest, job.src_meta
    _check_size(dest, job.src, job.size, info)
    dst_meta = _target_meta(dest, info)
    relation = meta.compare(src_meta, dst_meta)
    if relation not in meta.SAFE:
        if not opts.discard_target:
            cls = SplitBrainError if relation == meta.SPLIT_BRAIN else ResyncError
            raise cls("%s: target is %s relative to source %s (target generation %s, source %s); "
                      "refusing: name the loser with --discard-target to overwrite it"
                      % (dest, relation, job.src, dst_meta.current if dst_meta else None, src_meta.current))
        LOG.warning("%s: target is %s; discarding its writes as asked", dest, relation)
    why = meta.wrong_way(src_meta, job.src_stamp, dst_meta, field(info, "INFO", "stamp", integer_types, None))
    if why and not opts.discard_target:
        # a warning, not a refusal: a copy scribbled on and repaired from its
        # source looks the same, and file times are only as fine as a clock tick
        text = "%s: %s; overwriting it from %s: check the direction" % (dest, why, job.src)
        LOG.warning("%s", text)
        _emit(job.events, {"event": "warning", "warning": text})
    chosen = _choose_mode(opts.mode, job.extents, job.tracker, src_meta, dst_meta)
    if chosen == "tracked":
        why = meta.tracked_refusal(src_meta, dst_meta)
        if why:
            raise ResyncError("%s: tracked mode refused: %s; use checksum or full mode" % (dest, why))
        extents = job.extents
        if extents is None:
            if job.tracker is None:
                raise ResyncError("tracked mode: expected dirty extents or a tracker, got neither")
            extents = job.tracker.dirty_extents()
        work = plan.extents_to_intervals(extents, job.size)
    else:
        work = [(0, job.size)] if job.size else []
    _emit(job.events, {"event": "start", "src": job.src, "dest": dest, "mode": chosen, "size": job.size,
                       "relation": relation, "work": plan.total(work), "source_generation": src_meta.current})
    # a resumed run compares the finished ranges by digests, whatever the mode
    digest = sess.pick_digest(opts.strong) if chosen == "checksum" or opts.resume else None
    bar = _Progress(job.events, opts.progress, chosen)
    sess.report = bar
    try:
        res = sess.run_phase(chosen, job.src, src_meta, work, bs=opts.block_size, rate=opts.rate, digest=digest,
                             discard_target=opts.discard_target, resume=opts.resume,
                             commit=None if opts.verify else True)
    finally:
        bar.close()
    bytes_read = res["bytes_read"]
    verified = False
    if opts.verify:
        _emit(job.events, {"event": "phase", "phase": "verify"})
        bar = _Progress(job.events, opts.progress, "verify")
        sess.report = bar
        try:
            vres = sess.run_phase("verify", job.src, src_meta, [(0, job.size)] if job.size else [],
                                  bs=opts.block_size, rate=opts.rate, digest=sess.pick_digest(opts.strong),
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
    return res, bytes_read, wire, chosen, verified, conn.chan.codec.name if conn.chan.codec is not None else None


def verify(src, dest, options=None, events=None, **overrides):
    """See the module docstring.  :returns: :class:`VerifyResult`."""
    t0 = time.time()
    opts = _options(options, overrides)
    with BlockFile(src) as f:
        size = f.size
    src_meta = meta.load(src) or meta.DiskMeta(src, size, True)
    job = _Job(src, dest, size, src_meta._replace(size=size), opts, None, None, events, None)
    LOG.info("verify start: %s against %s", src, dest)
    audit = "verify end: %s against %s" % (src, dest)
    res = _audited(audit, _session, job, _run_verify, local_process=True)
    result = VerifyResult(not res["differing"], res["differing"], res["bytes_read"], round(time.time() - t0, 3))
    LOG.info("verify end: %s against %s: %s, %d bytes read, %.2f s", src, dest,
             "identical" if result.identical else "%d extent(s) differ" % len(result.differing),
             result.bytes_read, result.seconds)
    _emit(events, {"result": "ok" if result.identical else "differ", "identical": result.identical,
                   "differing": [[e.offset, e.length] for e in result.differing],
                   "bytes_read": result.bytes_read, "seconds": result.seconds})
    return result


def _run_verify(conn, job):
    opts = job.opts
    sess = SenderSession(conn)
    info = _handshake(sess, conn)
    _check_size(job.dest, job.src, job.size, info)
    _emit(job.events, {"event": "start", "src": job.src, "dest": job.dest, "mode": "verify", "size": job.size,
                       "work": job.size})
    bar = _Progress(job.events, opts.progress, "verify")
    sess.report = bar
    try:
        res = sess.run_phase("verify", job.src, job.src_meta, [(0, job.size)] if job.size else [],
                             bs=opts.block_size, rate=opts.rate, digest=sess.pick_digest(opts.strong), commit=None)
    finally:
        bar.close()
    sess.bye()
    return res


def serve(listen, key_file, exports, ready=None, cert=None, plaintext=False):
    """Run a TCP receiver in this thread until KeyboardInterrupt.

    :param ready: optional callable receiving the bound ``(addr, port)``.
    """
    server = ResyncServer(listen, key_file, exports, cert=cert, plaintext=plaintext)
    if ready is not None:
        ready(server.address)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return server
