"""A simulated domU: a workload thread, its memory state and its disks.

States (``state``):

* ``running``: the workload writes record ``memory["next"]`` to its disk,
  then increments ``next``, ``rate`` times a second;
* ``paused``: the workload waits (xm pause, or suspended for a checkpoint
  or a migration);
* ``incoming``: a Remus backup's copy: memory and disk follow the primary's
  checkpoints, the workload does not run until failover;
* ``dead``: destroyed.

The memory state is what a checkpoint or a migration carries: ``next``
(the next record number), ``seed`` (the workload's record content) and the
observer's address.  Acknowledgements leave the domain like network output:
straight to the observer when unprotected; held by the Remus sender until
the checkpoint that covers them commits when protected (``sch_plug``).

:meth:`SimDomain.suspended` is the checkpoint's suspend: it holds the lock
the workload takes around each write, so a checkpoint never splits a write.
"""
from __future__ import absolute_import, division, print_function

import logging
import socket
import threading
import time

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.sim import workload
from xen_remus_ext.sim.wire import SECTOR

LOG = logging.getLogger(__name__)

RUNNING, PAUSED, INCOMING, DEAD = "running", "paused", "incoming", "dead"
STATE_TO_XM = {RUNNING: "r-----", PAUSED: "--p---", INCOMING: "--p---", DEAD: "-----d"}


class Observer(object):
    """The outside world the guest talks to: acks go to a Unix socket.

    ``ack NAME UPTO`` means records ``0 .. UPTO-1`` of domain NAME were
    acknowledged.  A missing observer is not an error (nobody listening).
    """

    def __init__(self, path):
        self.path = path
        self.sock = None
        self.lock = threading.Lock()
        self.failing = None         # why the last ack was not delivered (logged once)

    def ack(self, name, upto):
        if not self.path:
            return
        line = ("ack %s %d\n" % (name, upto)).encode("ascii")
        with self.lock:
            for _ in range(2):
                try:
                    if self.sock is None:
                        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                        s.settimeout(2.0)
                        s.connect(self.path)
                        self.sock = s
                    self.sock.sendall(line)
                    if self.failing is not None:
                        LOG.info("observer %s: acks of %s delivered again", self.path, name)
                        self.failing = None
                    return
                except (socket.error, OSError) as exc:
                    if self.failing is None:
                        LOG.warning("observer %s: ack of %s up to %d not delivered: %s",
                                    self.path, name, upto, exc)
                    self.failing = "%s" % (exc,)
                    self.close_locked()

    def close_locked(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except (socket.error, OSError):
                pass
            self.sock = None

    def close(self):
        with self.lock:
            self.close_locked()


class SimDomain(object):
    """One domain on one simulated host.

    :param config: dict ``name, uuid, memory, disks`` (list of dicts
        ``uname, vdev, mode, path`` where ``path`` is the host-side file)
        and ``workload`` (``rate`` writes/s, ``seed``, ``observer`` path).
    :param memory: the memory state (see module doc); None = fresh boot.
    :param disks: dict vdev -> :class:`sim.disk.DiskFile`.
    """

    def __init__(self, domid, config, memory, disks, state=PAUSED):
        self.domid = domid
        self.config = config
        self.name = config["name"]
        wl = config.get("workload") or {}
        self.rate = float(wl.get("rate", 100))
        # records per write (consecutive sectors, at most 8 = one 4 KiB
        # block-remus wreq): ``rate`` x ``batch`` x 512 bytes/s of load
        self.batch = max(1, min(8, int(wl.get("batch", 1))))
        if memory is None:
            memory = {"next": 0, "seed": int(wl.get("seed", 0)),
                      "observer": wl.get("observer") or ""}
        self.memory = dict(memory)
        self.disks = disks
        self.state = state
        self.cond = threading.Condition(threading.Lock())
        self.remus = None           # the RemusSender mirroring our writes
        self.observer = Observer(self.memory.get("observer"))
        self.thread = None
        self.started = time.time()
        self.error = None

    # ------------------------------------------------------------ lifecycle
    def boot(self):
        """Start the workload thread (it idles unless ``running``)."""
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="dom-%s" % self.name)
            self.thread.daemon = True
            self.thread.start()

    def set_state(self, state):
        with self.cond:
            if self.state == DEAD:
                raise ToolstackError("domain %s: expected a live domain, got a destroyed one"
                                     % self.name)
            self.state = state
            self.cond.notify_all()

    def destroy(self):
        with self.cond:
            self.state = DEAD
            self.cond.notify_all()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(5.0)
        self.observer.close()

    def suspended(self):
        """Context manager: the domain makes no write while inside."""
        return self.cond

    def snapshot(self):
        """A copy of the memory state (call while suspended)."""
        return dict(self.memory)

    # ------------------------------------------------------------ workload
    def _run(self):
        period = 1.0 / self.rate if self.rate > 0 else 0.01
        vdev = sorted(self.disks)[0] if self.disks else None
        due = time.time()
        while True:
            with self.cond:
                while self.state in (PAUSED, INCOMING) or (self.state == RUNNING and self.rate <= 0):
                    self.cond.wait(0.5)
                    due = time.time()   # no catching up on time spent paused
                if self.state == DEAD:
                    return
                if vdev is not None:
                    try:
                        self._write_record(vdev)
                    except (ToolstackError, OSError, IOError) as exc:
                        self.error = "%s" % (exc,)
                        LOG.error("domain %s crashed: %s", self.name, exc)
                        self.state = PAUSED
                        continue
                    upto = self.memory["next"]
                    if self.remus is None:
                        self.observer.ack(self.name, upto)
            # pace by schedule, not by a fixed sleep, so ``rate`` holds
            due = max(due + period, time.time() - 0.1)
            delay = due - time.time()
            if delay > 0:
                time.sleep(delay)

    def _write_record(self, vdev):
        """Write the next ``batch`` records (one write, never wrapping past the
        last slot) and advance ``next`` past them."""
        disk = self.disks[vdev]
        n = self.memory["next"]
        slots = workload.slots_for(disk.size)
        count = min(self.batch, slots - n % slots)
        seed = self.memory["seed"]
        data = b"".join(workload.make_record(seed, n + i) for i in range(count))
        off = workload.offset_of(n, slots)
        sender = self.remus
        if sender is not None:
            sender.mirror(vdev, off // SECTOR, data)
        disk.write(off, data)
        self.memory["next"] = n + count

    def info(self):
        return {"domid": self.domid, "name": self.name, "state": STATE_TO_XM[self.state],
                "sim_state": self.state, "memory": self.config.get("memory", 0),
                "next": self.memory.get("next", 0), "protected": self.remus is not None,
                "error": self.error}
