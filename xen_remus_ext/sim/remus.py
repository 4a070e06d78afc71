"""Remus in the simulator: block-remus disk mirroring plus memory checkpoints.

Follows docs/xen-facts.md sections 4 and 5:

* primary (:class:`RemusSender`): every guest write is sent as ``wreq``
  before it reaches the local disk, without waiting for an answer; every
  ``interval`` the domain is suspended, its memory sent (``mchk``), ``creq``
  sent, the domain resumed; when the backup answers ``done`` the checkpoint
  has committed and only then are the acknowledgements of the writes it
  covers released to the observer (output commit).  Any replication error
  or 1000 ms without ``done`` drops the domain to unprotected passthrough
  (its held acks go out, as the plug is removed) and rotates the primary
  copy's generation: it now holds writes the backup will never see.
* backup (:class:`RemusReceiver`): ``wreq`` data is buffered in RAM;
  ``creq`` writes the epoch's buffer to the disk, makes the buffered memory
  the committed checkpoint and answers ``done``.  block-remus keys its
  buffer by sector and writes it sorted; the sim keeps arrival order and
  merges writes that continue each other, which leaves the same bytes on
  disk (a later write to a sector still wins) for less work per write.
  EOF, an error or 1000 ms of silence is a failover: the uncommitted
  buffer and memory are dropped, the disk's generation rotated,
  and the domain resumed from the last committed checkpoint.  A host whose
  ``on_stream_break`` is ``wait``, or a stream whose checkpoint 0 says
  ``hold`` (the primary's ``remus_start(hold=True)``; under a cluster
  manager, which fences the old primary first), keeps the copy paused at
  that checkpoint instead,
  until :func:`take_over` (the cluster's promote) resumes it.

The sim's backup writes a commit to its disk before answering ``done``;
block-remus answers first and writes in the background, but blocks guest
I/O at failover until that write drained, so what a resumed guest can see
is the same.
"""
from __future__ import absolute_import, division, print_function

import logging
import socket
import threading
import time

from xen_remus_ext.errors import ProtocolError, ToolstackError
from xen_remus_ext.sim import wire
from xen_remus_ext.sim.domain import DEAD, INCOMING, RUNNING

LOG = logging.getLogger(__name__)

CONNRETRY_S = 10.0


def rotate_generation(path):
    """Call :func:`resync.meta.rotate` on a disk copy (failover, or a primary
    left unprotected).  Quietly skipped when the resync package lacks it."""
    try:
        from xen_remus_ext.resync import meta
    except ImportError:
        LOG.warning("resync.meta missing: generation of %s not rotated", path)
        return None
    return meta.rotate(path)


class RemusSender(object):
    """The primary's half for one domain (its first disk's stream).

    States: ``connecting`` -> ``protecting`` -> ``stopped`` (remus_stop) or
    ``failed`` (replication error; domain unprotected).
    """

    def __init__(self, domain, addr, interval_ms=100, on_event=None, hold=False):
        self.domain = domain
        self.hold = bool(hold)      # the backup holds its copy when the stream breaks
        self.addr = addr
        self.interval = interval_ms / 1000.0
        self.on_event = on_event or (lambda *a: None)
        self.sock = None
        self.state = "connecting"
        self.epoch = 0
        self.commits = 0
        self.last_commit = None
        self.stop_evt = threading.Event()
        self.thread = None
        self.error = None

    # ---------------------------------------------------------------- start
    def start(self):
        """Connect, send checkpoint 0 (config + memory), wait for ``done``,
        then start mirroring and the checkpoint loop."""
        deadline = time.time() + CONNRETRY_S
        while True:
            try:
                sock = socket.create_connection(self.addr, timeout=wire.HEARTBEAT_MS / 1000.0)
                break
            except (socket.error, OSError) as exc:
                if time.time() > deadline:
                    raise ToolstackError("remus %s: cannot reach backup %s:%d: %s"
                                         % (self.domain.name, self.addr[0], self.addr[1], exc))
                time.sleep(0.2)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        dom = self.domain
        try:
            with dom.suspended():
                first = {"config": dom.config, "memory": dom.snapshot(), "epoch": 0}
                if self.hold:
                    first["hold"] = True
                sock.sendall(wire.format_mchk(first) + wire.OP_CREQ)
                self._expect_done()
                dom.remus = self
        except (socket.error, OSError, EOFError, ProtocolError) as exc:
            sock.close()
            raise ToolstackError("remus %s: backup %s:%d refused checkpoint 0: %s"
                                 % (dom.name, self.addr[0], self.addr[1], exc))
        self.state = "protecting"
        self.commits = 1
        self.last_commit = time.time()
        self.thread = threading.Thread(target=self._loop, name="remus-%s" % dom.name)
        self.thread.daemon = True
        self.thread.start()

    def _expect_done(self):
        op, _ = wire.read_message(self.sock)
        if op != wire.OP_DONE:
            raise ProtocolError("remus: expected done, got %r" % (op,))

    # ------------------------------------------------------------ mirroring
    def mirror(self, vdev, sector, data):
        """Called by the domain, suspended lock held, before the local write."""
        if self.state != "protecting" or vdev != self._vdev():
            return
        try:
            self.sock.sendall(wire.format_wreq(sector, data))
        except (socket.error, OSError) as exc:
            self._fail("wreq: %s" % (exc,), locked=True)

    def _vdev(self):
        return sorted(self.domain.disks)[0]

    # ----------------------------------------------------------- checkpoints
    def _loop(self):
        dom = self.domain
        while not self.stop_evt.wait(self.interval):
            t0 = time.time()
            try:
                with dom.suspended():
                    if self.state != "protecting":
                        return
                    mem = dom.snapshot()
                    self.epoch += 1
                    self.sock.sendall(wire.format_mchk({"memory": mem, "epoch": self.epoch})
                                      + wire.OP_CREQ)
                self._expect_done()
            except (socket.error, OSError, EOFError, ProtocolError) as exc:
                if self.state == "protecting":
                    self._fail("checkpoint %d: %s" % (self.epoch, exc), locked=False)
                return
            self.commits += 1
            self.last_commit = time.time()
            # output commit: release what the committed checkpoint covers
            dom.observer.ack(dom.name, mem["next"])
            LOG.debug("remus %s: epoch %d committed in %.1f ms", dom.name, self.epoch,
                      (time.time() - t0) * 1000)

    def _fail(self, why, locked):
        """Replication broke: unprotected passthrough from now on."""
        if self.state != "protecting":
            return
        self.state = "failed"
        self.error = why
        dom = self.domain
        LOG.warning("remus %s: replication failed (%s); running unprotected", dom.name, why)
        if locked:
            self._unplug()
        else:
            with dom.suspended():
                self._unplug()
        self._close()
        for d in dom.disks.values():
            rotate_generation(d.path)
        self.on_event("unprotected", dom.name, why)

    def _unplug(self):
        dom = self.domain
        dom.remus = None
        dom.observer.ack(dom.name, dom.memory["next"])

    def stop(self, tell_backup=True):
        """remus_stop: tell the backup to discard its copy, stop mirroring.
        ``tell_backup=False``: just end the stream (xl's Remus has no stop
        record), so the backup sees a broken stream."""
        dom = self.domain
        with dom.suspended():
            if self.state == "protecting":
                self.state = "stopped"
                try:
                    if tell_backup:
                        self.sock.sendall(wire.OP_STOP)
                    else:
                        self.sock.shutdown(socket.SHUT_RDWR)
                except (socket.error, OSError):
                    pass
            self._unplug()
        self.stop_evt.set()
        if self.thread is not None:
            self.thread.join(5.0)
        self._close()

    def _close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except (socket.error, OSError):
                pass

    def status(self):
        return {"state": self.state, "epoch": self.epoch, "commits": self.commits,
                "backup": "%s:%d" % self.addr, "error": self.error,
                "lag": (time.time() - self.last_commit) if self.last_commit else None}


def in_order_runs(writes):
    """``[(sector, data)]`` in arrival order -> ``[(offset, data)]`` with
    each write that continues the previous one merged into it.  Applied in
    this order, a later write to a sector wins, as in block-remus' per-sector
    hash; merging keeps the number of disk writes low."""
    out = []
    for sector, data in writes:
        off = sector * wire.SECTOR
        if out and out[-1][0] + out[-1][2] == off:
            out[-1][1].append(data)
            out[-1][2] += len(data)
        else:
            out.append([off, [data], len(data)])
    return [(o, b"".join(parts)) for o, parts, _ in out]


class RemusReceiver(object):
    """The backup's half for one incoming stream (runs in its own thread).

    :param host: the agent (``create_incoming(config, memory)`` returns a
        domain in state ``incoming``, ``destroy_domain(domain)``,
        ``event(kind, ...)``).
    """

    def __init__(self, host, sock, peer):
        self.host = host
        self.sock = sock
        self.peer = peer
        self.domain = None
        self.current = []        # (sector, data) of this epoch, in arrival order
        self.pending = None      # memory sent for the epoch being committed
        self.committed = None
        self.epoch = -1
        self.hold = False        # the primary asked this copy to be held when the stream breaks

    def run(self):
        self.sock.settimeout(wire.HEARTBEAT_MS / 1000.0)
        try:
            self._serve()
        except (EOFError, socket.timeout, socket.error, OSError, ProtocolError) as exc:
            self._failover("%s" % (exc,) or exc.__class__.__name__)
        except ToolstackError as exc:
            LOG.error("remus backup from %s: %s", self.peer, exc)
            if self.domain is not None:
                self.host.destroy_domain(self.domain)
        finally:
            try:
                self.sock.close()
            except (socket.error, OSError):
                pass

    def _serve(self):
        reader = wire.SockReader(self.sock)
        while True:
            op, payload = wire.read_message(reader)
            if op == wire.OP_WREQ:
                self.current.append(payload)
            elif op == wire.OP_MCHK:
                if self.domain is None:
                    if "config" not in payload:
                        raise ProtocolError("remus: expected checkpoint 0 with a config first")
                    self.domain = self.host.create_incoming(payload["config"], payload["memory"])
                    self.hold = bool(payload.get("hold"))
                self.pending = payload
            elif op == wire.OP_CREQ:
                self._commit()
                self.sock.sendall(wire.OP_DONE)
            elif op == wire.OP_STOP:
                LOG.info("remus backup of %s: protection stopped by the primary",
                         self.domain.name if self.domain else "?")
                if self.domain is not None:
                    self.host.destroy_domain(self.domain)
                    self.domain = None
                return
            else:
                raise ProtocolError("remus backup: unexpected %r" % (op,))

    def _commit(self):
        if self.domain is None or self.pending is None:
            raise ProtocolError("remus: creq before any memory checkpoint")
        disk = self.domain.disks[sorted(self.domain.disks)[0]]
        disk.write_runs(in_order_runs(self.current))
        self.current = []
        self.committed = self.pending
        self.pending = None
        self.epoch = self.committed.get("epoch", self.epoch + 1)
        with self.domain.suspended():
            self.domain.memory = dict(self.committed["memory"])
        self.domain.checkpoints = getattr(self.domain, "checkpoints", 0) + 1

    def _failover(self, why):
        dom = self.domain
        if dom is None:
            LOG.warning("remus backup from %s: stream ended before checkpoint 0 (%s)", self.peer, why)
            return
        if self.committed is None:
            LOG.warning("remus backup of %s: no committed checkpoint; discarding", dom.name)
            self.host.destroy_domain(dom)
            return
        if dom.state == DEAD:
            LOG.info("remus backup of %s: stream ended (%s) after the copy was destroyed; nothing to resume",
                     dom.name, why)
            return
        if self.hold or getattr(self.host, "on_stream_break", "resume") == "wait":
            self._orphan(dom, why)
            return
        sectors = set()
        for sector, data in self.current:
            sectors.update(range(sector, sector + len(data) // wire.SECTOR))
        dropped = len(sectors)
        vdev = sorted(dom.disks)[0]
        self.host.failover_tracker(dom, {vdev: sorted(sectors)})
        self.current = []
        self.pending = None
        LOG.warning("remus backup of %s: primary silent (%s); failover to epoch %d,"
                    " %d uncommitted sectors dropped", dom.name, why, self.epoch, dropped)
        for d in dom.disks.values():
            rotate_generation(d.path)
        with dom.suspended():
            if dom.state == INCOMING:
                dom.memory = dict(self.committed["memory"])
        try:
            dom.set_state(RUNNING)
        except ToolstackError as exc:   # destroyed meanwhile (xm destroy of the copy)
            LOG.info("remus backup of %s: not resumed: %s", dom.name, exc)
            return
        self.host.event("failover", dom.name, self.epoch, dropped)

    def _orphan(self, dom, why):
        """The stream broke while the host waits for a promote (under a
        cluster manager): drop what is uncommitted, keep the last committed
        checkpoint, stay paused.  :func:`take_over` resumes it later."""
        sectors = set()
        for sector, data in self.current:
            sectors.update(range(sector, sector + len(data) // wire.SECTOR))
        vdev = sorted(dom.disks)[0]
        dom.dropped = {vdev: sorted(sectors)}
        self.current = []
        self.pending = None
        dom.backup_state = "broken"
        LOG.warning("remus backup of %s: primary silent (%s); holding epoch %d paused for a promote,"
                    " %d uncommitted sectors dropped", dom.name, why, self.epoch, len(sectors))
        self.host.event("stream-broken", dom.name, self.epoch, len(sectors))


def take_over(host, dom):
    """Promote a backup whose stream broke: resume it from its last committed
    checkpoint on a disk copy whose generation rotates (it now takes writes
    the old primary never sees), tracking those writes for the failback."""
    host.failover_tracker(dom, getattr(dom, "dropped", {}))
    for d in dom.disks.values():
        rotate_generation(d.path)
    dom.backup_state = None
    dom.set_state(RUNNING)
    host.event("failover", dom.name, getattr(dom, "checkpoints", 0), "promoted")
