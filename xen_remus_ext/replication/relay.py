"""The two relays of checkpoint-consistent disk replication (adapter).

``xl remus -s 'xen-remus replicate relay ...' DOMAIN HOST`` makes xl run the
*primary relay* in place of ``ssh``: its stdin is the pipe xl's save helper
writes the migration stream into, its stdout goes back to xl.  The relay
starts the *backup relay* on HOST (over ssh, or any command), which runs
``xl migrate-receive -r`` as its child.  One link carries xl's stream, the
disk writes of each epoch, the cuts and heartbeats (wire.py).

Primary relay, per checkpoint N (stream.py says where):

1. reads xl's stream never past the end of the current element, and forwards it;
2. at SUSPENDED (libxc's X86_TSC_INFO) it stops reading, asks the disk
   server to CUT epoch N, forwards the writes that precede the cut and the
   CUT itself, and measures what its input pipe holds (FIONREAD): the proof
   that the guest was still suspended is that libxc still had more to write
   before its CHECKPOINT record than the pipe held;
3. reads on; the backup acknowledges checkpoint N after applying it.

Backup relay: writes of each epoch go to the replica's spool; libxl's
CHECKPOINT_END N is handed to xl only after epoch N is cut, applied and
fsynced; then ACK N goes back.  Silence longer than the timeout or the end
of the link is a failover: uncommitted epochs are dropped, then xl's stdin
is closed, and xl resumes the guest from checkpoint N on exactly disk N.
ABORT (the primary could not prove a cut) kills xl instead: no failover.
"""
from __future__ import absolute_import, division, print_function

import errno
import fcntl
import json
import logging
import os
import select
import signal
import struct
import termios
import time

from xen_remus_ext.errors import ReplicationError, StreamFormatError
from xen_remus_ext.replication import stream, wire

LOG = logging.getLogger(__name__)

F_SETPIPE_SZ = 1031
F_GETPIPE_SZ = 1032
PIPE_SIZE = 4096
READ_MAX = 1 << 16


def shrink_pipe(fd):
    """Make the pipe on ``fd`` hold at most one page; returns its capacity,
    or None if ``fd`` is not a pipe."""
    try:
        fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        return fcntl.fcntl(fd, F_GETPIPE_SZ)
    except (IOError, OSError) as exc:
        if exc.errno in (errno.EBADF, errno.EINVAL, errno.ENOTTY, errno.EPERM):
            return None
        raise


def readable_bytes(fd):
    buf = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    return struct.unpack("i", buf)[0]


def write_all(fd, data):
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except OSError as exc:
            if exc.errno == errno.EINTR:
                continue
            raise


class LinkError(ReplicationError):
    """Reading the link failed (it broke, as an end of it does)."""


class _Reader(object):
    """Frames from one descriptor."""

    def __init__(self, fd, peer):
        self.fd = fd
        self.peer = peer
        self.decoder = wire.Decoder(peer)
        self.eof = False

    def read(self):
        try:
            data = os.read(self.fd, READ_MAX)
        except OSError as exc:
            if exc.errno in (errno.EINTR, errno.EAGAIN):
                return []
            raise LinkError("%s: %s" % (self.peer, exc.strerror))
        if not data:
            self.eof = True
            return []
        return self.decoder.feed(data)


class PrimaryRelay(object):
    """:param xl_in: fd of xl's stream (a pipe: it is shrunk to one page).
    :param xl_out: fd toward xl (the backup's replies).
    :param link_in, link_out: fds of the link to the backup relay.
    :param control: a connected socket to the disk server's control socket.
    :param baseline: ``full`` (epoch 0 starts with the whole disk) or
        ``none`` (the backup's copy is already identical up to now: the guest
        must not write before ``on_attached`` is called).
    :param on_attached: called with the disk server's HELLO once every later
        write is captured.
    :param on_ack: called with the statistics after each acknowledgement.
    """

    def __init__(self, xl_in, xl_out, link_in, link_out, control, baseline="full",
                 beat=0.2, clock=time.time, require_pipe=True, on_attached=None, on_ack=None):
        self.xl_in, self.xl_out = xl_in, xl_out
        self.link_in, self.link_out = link_in, link_out
        self.control = control
        self.baseline = baseline
        self.beat = beat
        self.clock = clock
        self.require_pipe = require_pipe
        self.on_attached = on_attached
        self.on_ack = on_ack
        self.scanner = stream.StreamScanner()
        self.tracker = stream.CheckpointTracker()
        self.stats = {"checkpoints": 0, "cuts": [], "acks": 0, "ack_latency": [],
                      "writes": 0, "write_bytes": 0, "stream_bytes": 0, "pipe": None}
        self._commit_sent = {}
        self._last_out = clock()
        self._inpipe_after_cut = None
        self._after_commit = False
        self._first_read = None

    def _send(self, data):
        write_all(self.link_out, data)
        self._last_out = self.clock()

    def _abort(self, reason):
        LOG.error("replication aborted: %s", reason)
        try:
            self._send(wire.frame(wire.ABORT, reason.encode("utf-8")[:4096]))
        except OSError:
            pass
        raise ReplicationError(reason)

    def _hello(self):
        self.control.sendall(wire.hello_frame({"baseline": self.baseline}))
        dec = wire.Decoder("disk server")
        while True:
            data = self.control.recv(65536)
            if not data:
                raise ReplicationError("disk server closed the control connection at HELLO")
            frames = dec.feed(data)
            if frames:
                break
        ftype, body = frames[0]
        if ftype == wire.ABORT:
            raise ReplicationError("disk server refused: %s" % body.decode("utf-8", "replace"))
        if ftype != wire.HELLO:
            raise ReplicationError("disk server: %s before HELLO" % wire.NAMES[ftype])
        self._control_dec = dec
        self._control_backlog = frames[1:]
        return wire.parse_hello(body, "disk server")

    def run(self):
        cap = shrink_pipe(self.xl_in)
        self.stats["pipe"] = cap
        if cap is None or cap > PIPE_SIZE:
            msg = "xl's stream is not a pipe of at most %d bytes (capacity %s)" % (PIPE_SIZE, cap)
            if self.require_pipe:
                raise ReplicationError(msg + ": the suspend point cannot be proven")
            LOG.warning("%s", msg)
        info = self._hello()
        LOG.info("disk server attached: %s", info)
        if self.on_attached is not None:
            self.on_attached(info)
        link = _Reader(self.link_in, "backup relay")
        waiting_cut = False
        xl_eof = False
        backlog = self._control_backlog
        while True:
            for ftype, body in backlog:
                waiting_cut = self._from_control(ftype, body, waiting_cut)
            backlog = []
            rlist = [self.control, self.link_in]
            if not waiting_cut and not xl_eof:
                rlist.append(self.xl_in)
            timeout = max(0.0, self._last_out + self.beat - self.clock())
            ready, _, _ = select.select(rlist, [], [], timeout)
            if not ready:
                self._send(wire.frame(wire.BEAT))
                continue
            if self.control in ready:
                data = self.control.recv(READ_MAX)
                if not data:
                    self._abort("disk server closed the control connection")
                backlog = self._control_dec.feed(data)
            if self.link_in in ready:
                for ftype, body in link.read():
                    self._from_backup(ftype, body)
                if link.eof:
                    raise ReplicationError("backup relay closed the link")
            if self.xl_in in ready and not waiting_cut and not backlog:
                want = self.scanner.want()
                if want == 0:
                    data = os.read(self.xl_in, 1)
                    if data:
                        self._abort("bytes after the end of xl's stream")
                    xl_eof = True
                    break
                data = os.read(self.xl_in, min(want, READ_MAX))
                if not data:
                    xl_eof = True
                    break
                waiting_cut = self._from_xl(data)
        return self.stats

    def _from_xl(self, data):
        self.stats["stream_bytes"] += len(data)
        if self._after_commit:
            # libxc writes nothing between CHECKPOINT_END N-1 and the suspend for N
            self._after_commit, self._first_read = False, self.clock()
        try:
            facts = self.tracker.facts(self.scanner.feed(data))
        except StreamFormatError as exc:
            self._abort("xl's stream: %s" % exc)
        # a checkpoint's libxc part is over: was the guest still suspended at the cut?
        tail = self.tracker.tail_after_suspend()
        if tail is not None and self._inpipe_after_cut is not None:
            if self._inpipe_after_cut >= tail:
                self._abort("checkpoint %d: the pipe held %d bytes after the cut, libxc's tail is %d"
                            % (self.tracker.checkpoint, self._inpipe_after_cut, tail))
            self._inpipe_after_cut = None
            if self._first_read is not None and self.stats["cuts"]:
                # first byte of the checkpoint read -> its CHECKPOINT record read: the
                # part of the guest's suspension this relay sees (its cut included)
                self.stats["cuts"][-1]["window"] = round(self.clock() - self._first_read, 6)
            self._first_read = None
        self._send(wire.frame(wire.XEN, data))
        cut = False
        for fact in facts:
            if fact.kind == stream.SUSPENDED:
                self._cut_asked = self.clock()
                self.control.sendall(wire.frame(wire.CUT))
                cut = True
            elif fact.kind == stream.COMMIT:
                self.stats["checkpoints"] += 1
                self._commit_sent[fact.checkpoint] = self.clock()
                self._after_commit = True
        return cut

    def _from_control(self, ftype, body, waiting_cut):
        if ftype == wire.WRITE:
            self.stats["writes"] += 1
            self.stats["write_bytes"] += len(body) - wire.WRITE_HEAD.size
            self._send(wire.frame(ftype, body))
            return waiting_cut
        if ftype == wire.CUT and waiting_cut:
            epoch, writes, nbytes = wire.parse_cut(body)
            if epoch != self.tracker.checkpoint:
                self._abort("disk server cut epoch %d during checkpoint %d" % (epoch, self.tracker.checkpoint))
            self._inpipe_after_cut = readable_bytes(self.xl_in)
            self._send(wire.frame(ftype, body))
            self.stats["cuts"].append({"epoch": epoch, "writes": writes, "bytes": nbytes,
                                       "hold": round(self.clock() - self._cut_asked, 6),
                                       "inpipe": self._inpipe_after_cut})
            return False
        self._abort("disk server: unexpected %s frame" % wire.NAMES[ftype])

    def _from_backup(self, ftype, body):
        if ftype == wire.BACK:
            write_all(self.xl_out, body)
        elif ftype == wire.ACK:
            n = wire.parse_ack(body)
            sent = self._commit_sent.pop(n, None)
            self.stats["acks"] += 1
            if sent is not None:
                self.stats["ack_latency"].append(round(self.clock() - sent, 6))
            if self.on_ack is not None:
                self.on_ack(self.stats)
        else:
            raise ReplicationError("backup relay: unexpected %s frame" % wire.NAMES[ftype])


class BackupRelay(object):
    """:param link_in, link_out: fds of the link from the primary relay.
    :param child_in, child_out: fds of ``xl migrate-receive``'s stdin/stdout.
    :param replica: a :class:`~xen_remus_ext.replication.replica.Replica`.
    :param timeout: seconds of silence on the link that mean failover.
    :param kill_child: called on ABORT (stop xl without a failover).
    :param on_failover: called with the report once the uncommitted epochs
        are dropped, before xl is told (e.g. to keep a copy of the disk, or to
        end the guard that keeps xl's stdin open).
    :param on_commit: called with the report after each committed checkpoint.

    Silence is counted only while this process waits and runs: a wait that
    returns more than ``STALL`` seconds later than asked (this host did not
    run it: a dom0 stall, a starved CPU) is not counted, because the
    primary's frames of that time may still be on their way (counted in the
    report as ``stalls``, the longest as ``stall_max``).
    """

    STALL = 1.0
    #: longest single wait, so that a stall is told apart at that granularity
    WAIT_MAX = 1.0

    def __init__(self, link_in, link_out, child_in, child_out, replica, timeout=3.0,
                 clock=time.time, kill_child=None, on_failover=None, on_commit=None):
        self.link_in, self.link_out = link_in, link_out
        self.child_in, self.child_out = child_in, child_out
        self.replica = replica
        self.timeout = timeout
        self.clock = clock
        self.kill_child = kill_child
        self.on_failover = on_failover
        self.on_commit = on_commit
        self.scanner = stream.StreamScanner()
        self.tracker = stream.CheckpointTracker()
        self.report = {"committed": -1, "applied_writes": 0, "applied_bytes": 0,
                       "failover": False, "aborted": None, "dropped": None, "reason": None,
                       "stalls": 0, "stall_max": 0.0, "time": None}

    def run(self):
        link = _Reader(self.link_in, "primary relay")
        silent = 0.0
        child_open = True
        while True:
            rlist = [self.link_in] + ([self.child_out] if child_open else [])
            wait = max(0.0, min(self.timeout - silent, self.WAIT_MAX))
            t0 = self.clock()
            ready, _, _ = select.select(rlist, [], [], wait)
            waited = self.clock() - t0
            if self.link_in not in ready:
                if waited > wait + self.STALL:
                    self.report["stalls"] += 1
                    self.report["stall_max"] = round(max(self.report["stall_max"], waited - wait), 3)
                    LOG.warning("this host did not run the backup relay for %.1f s; not counted as "
                                "the primary's silence", waited - wait)
                else:
                    silent += waited
                if silent >= self.timeout:
                    return self._failover("no frame from the primary for %.1f s" % self.timeout)
            if child_open and self.child_out in ready:
                data = os.read(self.child_out, READ_MAX)
                if data:
                    try:
                        write_all(self.link_out, wire.frame(wire.BACK, data))
                    except OSError:
                        pass
                else:
                    child_open = False
            if self.link_in in ready:
                try:
                    frames = link.read()
                    silent = 0.0
                    for ftype, body in frames:
                        if ftype == wire.ABORT:
                            return self._abort(body.decode("utf-8", "replace"))
                        self._frame(ftype, body)
                except LinkError as exc:
                    return self._failover(str(exc))
                except ReplicationError as exc:
                    # bytes that break the rules come from a primary still
                    # there (or from something in between): resuming the
                    # copy would run the guest twice
                    return self._abort("primary relay: %s" % exc, by_primary=False)
                except (IOError, OSError) as exc:
                    # this end cannot go on (spool or disk I/O, the receiver gone)
                    return self._abort("backup: %s" % (exc.strerror or exc), by_primary=False)
                if link.eof:
                    return self._failover("the primary relay closed the link")

    def _frame(self, ftype, body):
        if ftype == wire.XEN:
            self._xen(body)
        elif ftype == wire.WRITE:
            epoch, offset, data = wire.parse_write(body)
            self.replica.write(epoch, offset, data)
        elif ftype == wire.CUT:
            self.replica.cut(*wire.parse_cut(body))
        elif ftype == wire.BEAT:
            pass
        else:
            raise ReplicationError("primary relay: unexpected %s frame" % wire.NAMES[ftype])

    def _xen(self, data):
        start = self.scanner.offset
        facts = self.tracker.facts(self.scanner.feed(data))
        pos = 0
        for fact in facts:
            if fact.kind != stream.COMMIT:
                continue
            writes, nbytes = self.replica.commit(fact.checkpoint)
            self.report["committed"] = fact.checkpoint
            self.report["applied_writes"] += writes
            self.report["applied_bytes"] += nbytes
            end = fact.offset - start
            write_all(self.child_in, data[pos:end])
            pos = end
            try:
                write_all(self.link_out, wire.ack_frame(fact.checkpoint))
            except OSError:
                pass
            if self.on_commit is not None:
                self.report["time"] = self.clock()
                self.on_commit(self.report)
        if pos < len(data):
            write_all(self.child_in, data[pos:])

    def _failover(self, reason):
        self.report["failover"] = True
        self.report["reason"] = reason
        self.report["time"] = self.clock()
        self.report["dropped"] = list(self.replica.failover())
        LOG.warning("failover (%s): disk at checkpoint %d, dropped %d epochs / %d writes / %d bytes",
                    reason, self.report["committed"], *self.report["dropped"])
        if self.on_failover is not None:
            self.on_failover(self.report)
        os.close(self.child_in)        # xl migrate-receive: end of stream -> Remus failover
        return self.report

    def _abort(self, reason, by_primary=True):
        self.report["aborted"] = reason
        self.report["dropped"] = list(self.replica.failover())
        LOG.error("%s: %s; the receiver is stopped without a failover",
                  "the primary aborted replication" if by_primary else "replication broke", reason)
        if self.kill_child is not None:
            self.kill_child()
        return self.report


def report_json(obj):
    return json.dumps(obj, sort_keys=True)


def kill_process(pid):
    def kill():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    return kill
