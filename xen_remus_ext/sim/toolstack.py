"""``SimToolstack``: :class:`ports.Toolstack` over one simulated host's agent.

Kind ``"sim"``.  It speaks the agent's JSON-lines RPC (:mod:`sim.wire`) on a
Unix socket (``unix:PATH``) or TCP (``HOST:PORT``).  ``migrate`` moves
memory only, as xend's does: the domain resumes on the destination's own
disk, whatever that disk holds.  Besides the port it offers what the
failback runner and the demo need of a simulated host: ``disk_path`` (the
host-side file of a guest-visible image path), ``tracker_for`` (the sim's
dirty tracker as a :class:`ports.Tracker`), and a few sim-only helpers.
"""
from __future__ import absolute_import, division, print_function

import socket
import threading

from xen_remus_ext import errors
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.model import DomainConfig, DomainInfo, Extent
from xen_remus_ext.ports import Toolstack, Tracker
from xen_remus_ext.sim import wire


class SimToolstack(Toolstack):
    """Client of one sim host.  Thread-safe (one call at a time)."""

    kind = "sim"

    def __init__(self, agent, name=None, timeout=30.0):
        self.agent = agent
        self.name = name or agent
        self.timeout = timeout
        self.lock = threading.Lock()
        self.sock = None
        self.reader = None
        self._root = None

    # ------------------------------------------------------------- plumbing
    def reset(self):
        with self.lock:
            self._drop()

    close = reset

    def _drop(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except (socket.error, OSError):
                pass
        self.sock = None
        self.reader = None

    def call(self, op, **args):
        """One RPC; :raises ToolstackError: host unreachable or op refused."""
        with self.lock:
            for attempt in (0, 1):
                try:
                    if self.sock is None:
                        self.sock = wire.connect(self.agent, timeout=self.timeout)
                        self.reader = wire.LineReader(self.sock)
                    wire.send_json(self.sock, {"op": op, "args": args})
                    line = self.reader.readline()
                    if line is None:
                        raise EOFError("agent closed the connection")
                    reply = wire.decode_json_line(line)
                    break
                except (socket.error, OSError, EOFError) as exc:
                    self._drop()
                    if attempt:
                        raise ToolstackError("sim host %s: agent %s unreachable during %s: %s"
                                             % (self.name, self.agent, op, exc))
        if reply.get("ok"):
            return reply.get("result")
        cls = getattr(errors, reply.get("kind") or "", None)
        if not (isinstance(cls, type) and issubclass(cls, errors.XenRemusError)) \
                or cls in (errors.ConfigError, errors.XenStoreError, errors.FailbackError):
            cls = ToolstackError
        raise cls("sim host %s: %s" % (self.name, reply.get("error")))

    # ----------------------------------------------------------------- port
    def list_domains(self):
        return [DomainInfo(d["domid"], d["name"], d["state"], d["memory"], self.name)
                for d in self.call("list_domains")]

    def domain_info(self, dom):
        d = self.call("domain_info", dom=dom)
        return DomainInfo(d["domid"], d["name"], d["state"], d["memory"], self.name)

    def domain_config(self, dom):
        from xen_remus_ext.config.disk import parse_disk_spec
        c = self.call("domain_config", dom=dom)
        disks = [parse_disk_spec("%s,%s,%s" % (d["uname"], d["vdev"], d.get("mode", "w")))
                 for d in c.get("disks", ())]
        return DomainConfig(name=c["name"], memory=int(c.get("memory", 64)), disks=disks,
                            options={"uuid": c.get("uuid"), "workload": c.get("workload")},
                            format="sim")

    def host_info(self):
        return self.call("host_info")

    def pause(self, dom):
        self.call("pause", dom=dom)

    def unpause(self, dom):
        self.call("unpause", dom=dom)

    def save(self, dom, path, checkpoint=False):
        self.call("save", dom=dom, path=path, checkpoint=checkpoint)

    def restore(self, path, paused=False):
        return self.call("restore", path=path, paused=paused)

    def migrate(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None):
        """Memory only (as ``xm migrate``): the destination runs the
        domain on its own copy of the disk."""
        if ssh is not None or config is not None:
            raise ToolstackError("sim migrate: ssh and config (xl -s/-C) are not simulated")
        return self.call("migrate", dom=dom, dst=dst, live=live, port=port, paused=paused)

    def destroy(self, dom):
        self.call("destroy", dom=dom)

    def remus_start(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                    blackhole=False, unsafe=False, hold=False):
        if blackhole:
            raise ToolstackError("sim remus: --blackhole is not simulated")
        extra = {"hold": True} if hold else {}
        self.call("remus_start", dom=dom, host=host, interval_ms=interval_ms, port=port,
                  net=net, disk=disk, **extra)

    def check_hold(self):
        """The simulated backup holds a copy whose stream breaks when the
        primary asked (``remus_start(hold=True)``) or its host's policy says
        so (:meth:`hold_on_stream_break`)."""
        return None

    def check_retarget(self):
        return None

    def retarget_disks(self, dom, config):
        """Re-point the remus disks of the PAUSED domain ``dom`` to the
        targets their unames name in ``config`` (a :class:`model.DomainConfig`,
        e.g. from ``failback.preflight.plan_direction``); the next
        :meth:`remus_start` replicates there.  Only ``vdev -> uname`` of the
        remus disks crosses to the agent, which refuses a running domain.

        :returns: the vdevs whose uname changed.
        :raises ToolstackError: the domain is not paused, or a uname names
            another image or no single peer.
        """
        unames = dict((d.vdev, d.uname) for d in config.disks if d.remus is not None)
        return self.call("retarget_disks", dom=dom, unames=unames)

    def remus_stop(self, dom, tell_backup=True):
        """Stop Remus of ``dom``.  ``tell_backup=False`` (a simulator extra):
        the stream just ends, as ``xl remus`` stopped by SIGINT ends it (xl's
        stream has no stop record): the backup then fails over, or holds its
        copy paused when it was asked to hold."""
        if tell_backup:
            self.call("remus_stop", dom=dom)
        else:
            self.call("remus_stop", dom=dom, tell_backup=False)

    def remus_running(self, dom):
        return bool(self.call("remus_running", dom=dom))

    def remus_backup(self, dom):
        """:returns: None unless ``dom`` here is a Remus backup copy, then
        ``{"state": "receiving"|"broken", "checkpoints": N}``."""
        return self.call("domain_info", dom=dom).get("backup")

    def hold_on_stream_break(self, hold=True):
        """Under a cluster manager: a backup whose stream breaks stays paused
        at its last committed checkpoint until :meth:`remus_takeover`."""
        self.call("set_on_stream_break", policy="wait" if hold else "resume")

    def remus_takeover(self, dom):
        """Resume the backup copy ``dom`` from its last committed checkpoint
        (its stream broke; the old primary is fenced)."""
        self.call("remus_takeover", dom=dom)

    # ------------------------------------------------------------ sim extras
    def create(self, config, paused=False):
        """Create a domain from a sim config dict (``name, memory, disks``
        of ``{uname, vdev, mode}``, ``workload``); :returns: domid."""
        return self.call("create", config=config, paused=paused)

    def create_from_file(self, path):
        """Create the domain a sim config file (JSON: ``name, memory,
        disks``, ``workload``) describes.  :raises ToolstackError: unreadable."""
        import json
        try:
            with open(path) as f:
                config = json.load(f)
        except (IOError, OSError, ValueError) as exc:
            raise ToolstackError("%s: expected a sim domain config (JSON), got: %s" % (path, exc))
        if not isinstance(config, dict) or not config.get("name"):
            raise ToolstackError("%s: expected a JSON object with a name, got %r" % (path, type(config).__name__))
        return self.create(config)

    def disk_path(self, path):
        """The host-side file of guest-visible image ``path``."""
        return self.call("disk_path", path=path)

    def disk_create(self, path, size):
        return self.call("disk_create", path=path, size=size)

    def disk_digest(self, path):
        return self.call("disk_digest", path=path)

    def disk_check(self, path, seed, acked):
        return self.call("disk_check", path=path, seed=seed, acked=acked)

    def sim_info(self, dom):
        """The agent's full record: ``next``, ``protected``, ``remus`` ..."""
        return self.call("domain_info", dom=dom)

    def events(self, since=0):
        return self.call("events", since=since)

    def tracks_writes(self):
        return True

    def tracker_for(self, dom, vdev):
        """:returns: a :class:`ports.Tracker` over ``dom``'s disk ``vdev``:
        the tracker already running there (after a failover it holds every
        write since, plus the sectors the backup dropped), until ``mark()``
        starts a new one."""
        return SimTracker(self, dom, vdev)

    def resync_to(self, path, peer, mode="auto", tracker=None, verify=False,
                  discard_target=False):
        """Resync this host's copy of image ``path`` to host ``peer``'s copy:
        the resync runs on this host and crosses a TCP socket to the peer's
        receiver.  :returns: the ``ResyncResult`` fields as a dict."""
        tid = tracker._current() if tracker is not None else None
        return self.call("resync", path=path, peer=peer, mode=mode, tid=tid, verify=verify,
                         discard_target=discard_target)


class SimTracker(Tracker):
    """The sim host's dirty tracker for one disk (blocks of 4 KiB).

    Lives in the host process: a host restart loses it, and
    :meth:`trustworthy` then says so.
    """

    name = "sim"

    def __init__(self, toolstack, dom, vdev):
        self.toolstack = toolstack
        self.dom = dom
        self.vdev = vdev
        self.tid = None

    def _current(self):
        if self.tid is None:
            self.tid = self.toolstack.call("tracker_current", dom=self.dom, vdev=self.vdev)
        return self.tid

    def trustworthy(self):
        if self._current() is None:
            return False
        try:
            return bool(self.toolstack.call("tracker_trustworthy", tid=self.tid))
        except ToolstackError:
            return False

    def mark(self):
        self.tid = self.toolstack.call("tracker_mark", dom=self.dom, vdev=self.vdev)

    def dirty_extents(self):
        if self._current() is None:
            raise ToolstackError("sim tracker %s/%s: expected mark() first, got none"
                                 % (self.dom, self.vdev))
        return [Extent(off, length) for off, length in
                self.toolstack.call("tracker_extents", tid=self.tid)]

    def clear(self):
        if self._current() is not None:
            self.toolstack.call("tracker_clear", tid=self.tid)
