"""The composition root: the one place that chooses adapters.

The core (``config/``, ``failback/``, resync's plan, protocol and metadata)
works on the ports (``ports.py``) and never asks which toolstack it holds.
The front ends (``cli/``, the xm front end through it, and the xend hook)
turn their options into a :class:`Site` here:

==============  ==============================  ============================  =====================
``toolstack``   this host                       the peer (``host``)           disks
==============  ==============================  ============================  =====================
``xl``          ``xl`` through a runner         ``ssh HOST xl``               resync engine (ssh/tcp)
``xend``        xend's XML-RPC (local socket)   its socket over ssh           resync engine (ssh/tcp)
                + tap-ctl and xenstore for      (``ssh://HOST``, or
                re-pointing remus disks         ``peer_uri``)
``sim``         the sim host's agent            the peer's agent              the source host's agent
                (``agent``)                     (``peer_agent``)              resyncs over TCP
==============  ==============================  ============================  =====================

The xenstores are informational (the ``remus-ext`` status keys): None where
none can be reached.  Nothing here runs an operation; it only builds.
"""
from __future__ import absolute_import, division, print_function

import errno
import os
import socket

from xen_remus_ext.errors import ValidationError, XenRemusError
from xen_remus_ext.ports import SystemClock
from xen_remus_ext.toolstack.runner import SubprocessRunner

__all__ = ["TOOLSTACKS", "Site", "SubprocessRunner", "SystemClock", "default_toolstack",
           "default_toolstack_kind", "xend_running", "open_site", "local_toolstack", "peer_toolstack",
           "peer_and_disks", "resync_disk_sync"]

#: what ``--toolstack`` accepts
TOOLSTACKS = ("xend", "xl", "sim")

class Site(object):
    """The adapters one command uses: this host's toolstack and xenstore,
    the peer's (when the command has one), the disks and the clock.

    A ``with`` block (or :meth:`close`) releases the xenstore connections.
    """

    def __init__(self, toolstack, peer=None, disk_sync=None, xenstore=None, peer_xenstore=None,
                 clock=None, supervise=None):
        self.toolstack = toolstack
        self.peer = peer
        self.disk_sync = disk_sync
        self.xenstore = xenstore
        self.peer_xenstore = peer_xenstore
        self.clock = clock or SystemClock()
        #: ``(host or None) -> None``: make sure ``xen-remus supervise`` runs
        #: on this host (None) or on ``host``; None where the hosts rotate
        #: generations themselves (the simulator)
        self.supervise = supervise

    def close(self):
        for xs in (self.xenstore, self.peer_xenstore):
            if xs is not None:
                xs.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def _on_path(name):
    for d in os.environ.get("PATH", "").split(os.pathsep):
        if d and os.access(os.path.join(d, name), os.X_OK):
            return True
    return False


#: what xl itself checks before a command that changes anything (xl.c, XEND_LOCK)
XEND_LOCK_FILES = ("/var/lock/subsys/xend", "/var/lock/xend")
XEND_PID_FILE = "/var/run/xend.pid"
XEND_SOCKET = "/var/run/xend/xmlrpc.sock"


def xend_running(lock_files=XEND_LOCK_FILES, pid_file=XEND_PID_FILE, socket_path=XEND_SOCKET):
    """Why we think xend runs on this host, or None.

    Xen 4.1-4.4 install ``xl`` next to xend, so ``xl`` on PATH says nothing.
    xl refuses to act while xend's lock file exists (``/var/lock/subsys/xend``
    or ``/var/lock/xend``, made by xend's init script); the same files count
    here, and so do xend's pid file naming a live process and its XML-RPC
    socket accepting a connection (an xend started without the init script).
    """
    for path in lock_files:
        if os.path.exists(path):
            return "xend's lock file %s exists" % path
    try:
        with open(pid_file) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
        return "xend's pid file %s names running process %d" % (pid_file, pid)
    except (IOError, OSError, ValueError, IndexError) as exc:
        if getattr(exc, "errno", None) == errno.EPERM:
            return "xend's pid file %s names a running process" % pid_file
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(socket_path)
        return "xend answers on %s" % socket_path
    except (socket.error, OSError):
        return None
    finally:
        sock.close()


def default_toolstack_kind(on_path, running=xend_running):
    """``xend`` when xend runs here, else ``xl`` when it is on PATH, else ``xend``."""
    if running() is not None:
        return "xend"
    return "xl" if on_path("xl") else "xend"


def default_toolstack():
    """The toolstack of this host: :func:`default_toolstack_kind`."""
    return default_toolstack_kind(_on_path)


def _kind(toolstack):
    kind = toolstack or default_toolstack()
    if kind not in TOOLSTACKS:
        raise ValidationError("toolstack: expected one of %s, got %r" % (", ".join(TOOLSTACKS), kind))
    return kind


def _pyxs_store(path=None, must_exist=False):
    """A pyxs XenStore, or None when pyxs or the daemon is missing."""
    try:
        from xen_remus_ext.toolstack.xenstore import PyxsXenStore
    except ImportError:
        return None
    try:
        xs = PyxsXenStore(path) if path else PyxsXenStore()
        if must_exist and not os.path.exists(xs.where):
            return None
        return xs
    except XenRemusError:
        return None


def _sim_xenstore(ts):
    """The xenstored double of a sim host (its agent says where)."""
    try:
        path = ts.host_info().get("xenstored")
    except XenRemusError:
        return None
    return _pyxs_store(path) if path else None


def local_toolstack(toolstack=None, agent=None, memory_only=False, tracker=None, xenstore=None):
    """This host's :class:`ports.Toolstack`.

    :param toolstack: ``xl``, ``xend``, ``sim`` or None (:func:`default_toolstack`)
    :param agent: sim: this host's agent (``unix:PATH`` or ``HOST:PORT``)
    :param memory_only: xl: Remus without disk replication (``xl remus -d``)
    :param tracker: ``"fiemap"`` to track disk writes (xl: only when asked;
        xend: the default, falling back to checksums where the images'
        filesystem cannot clone)
    :param xenstore: xend: the local xenstore re-pointing remus disks needs
    :raises ValidationError: an unknown toolstack, or sim without ``agent``
    """
    kind = _kind(toolstack)
    if kind == "sim":
        if not agent:
            raise ValidationError("--toolstack sim: expected --agent ADDR (this host's sim agent), got none")
        from xen_remus_ext.sim.toolstack import SimToolstack
        return SimToolstack(agent, name="local")
    if kind == "xl":
        from xen_remus_ext.toolstack.xl import XlToolstack
        from xen_remus_ext.replication.registry import live_entries, lookup_device
        return XlToolstack(SubprocessRunner(), memory_only=memory_only, tracker=tracker, served=lookup_device,
                           served_list=live_entries)
    from xen_remus_ext.toolstack.xend import XendToolstack
    return XendToolstack(runner=SubprocessRunner(), xenstore=xenstore, tracker=tracker or "fiemap")


def peer_toolstack(toolstack, host, ssh="ssh", peer_uri=None, peer_agent=None):
    """The peer's :class:`ports.Toolstack`, of the same kind as this host's.

    * xend: XML-RPC to the peer's xend Unix socket through ssh (``peer_uri``,
      default ``ssh://HOST``), and its Remus sender run there over the same ssh;
    * xl: the peer's ``xl`` run through ``SSH HOST xl``;
    * sim: the peer's agent (``peer_agent``).
    """
    kind = _kind(toolstack)
    if kind == "sim":
        if not peer_agent:
            raise ValidationError("peer %s: --toolstack sim: expected --peer-agent ADDR, got none" % (host,))
        from xen_remus_ext.sim.toolstack import SimToolstack
        return SimToolstack(peer_agent, name=host)
    if kind == "xl":
        from xen_remus_ext.toolstack.xl import XlToolstack
        from xen_remus_ext.resync.transport import ssh_prefix
        from xen_remus_ext.replication.registry import remote_lister
        from xen_remus_ext.resync.transport import remote_argv, remote_command
        runner = SubprocessRunner()
        lister = remote_lister(remote_argv(ssh or "ssh", host, remote_command() + ["replicate", "list", "--json"]),
                               runner)
        return XlToolstack(runner, xl=ssh_prefix(ssh or "ssh", host) + ["xl"], host=host, served_list=lister)
    from xen_remus_ext.resync.transport import check_host, split_ssh
    from xen_remus_ext.toolstack.xend import XendToolstack, ssh_uri
    # the "--" ends ssh's options: the host (checked, no leading '-') follows it
    return XendToolstack(uri=peer_uri or ssh_uri(check_host(host)), host=host, ssh=split_ssh(ssh or "ssh") + ["--"],
                         runner=SubprocessRunner())


def peer_and_disks(toolstack, host, ssh="ssh", key_file=None, peer_uri=None, peer_agent=None):
    """The peer's toolstack and the disk port for a command on ``toolstack``
    (built by :func:`local_toolstack`) toward ``host``.

    :returns: ``(peer toolstack, DiskSync)``
    """
    peer = peer_toolstack(toolstack.kind, host, ssh=ssh, peer_uri=peer_uri, peer_agent=peer_agent)
    if toolstack.kind == "sim":
        from xen_remus_ext.sim.disksync import SimDiskSync
        return peer, SimDiskSync([toolstack, peer])
    return peer, resync_disk_sync(ssh, key_file)


def resync_disk_sync(ssh="ssh", key_file=None):
    """The disks of real hosts: the resync engine over ssh or TCP."""
    from xen_remus_ext.resync.disksync import ResyncDiskSync
    return ResyncDiskSync(ssh=ssh or "ssh", key_file=key_file, runner=SubprocessRunner())


def supervisor_starter(toolstack, ssh="ssh", runner=None):
    """A callable ``(host or None)`` that makes sure ``xen-remus supervise``
    runs on this host (None) or on ``host`` over ssh."""
    import sys
    from xen_remus_ext.errors import FailbackError
    from xen_remus_ext.resync.transport import remote_argv, remote_command
    runner = runner or SubprocessRunner()
    words = ["-q", "supervise", "--daemon", "--toolstack", toolstack]

    def start(host):
        if host is None:
            argv = [sys.executable, "-m", "xen_remus_ext"] + words
        else:
            argv = remote_argv(ssh or "ssh", host, remote_command() + words)
        rc, _out, err = runner.run(argv, timeout=60)
        if rc != 0:
            msg = err.decode("utf-8", "replace").strip() if isinstance(err, bytes) else str(err or "")
            raise FailbackError("`xen-remus supervise --daemon` on %s: exit %d: %s"
                                % (host or "this host", rc, msg.splitlines()[-1] if msg else "no message"))
    return start


def sender_process_checker(toolstack=None):
    """For ``xen-remus supervise``: a callable ``(dom) -> bool`` telling
    whether a Remus sender for ``dom`` runs on this host that the toolstack
    adapter did not start (``xl remus`` run here over ssh by the peer), or
    None for the simulator (its hosts rotate generations themselves)."""
    if _kind(toolstack) == "sim":
        return None
    from xen_remus_ext.toolstack.processes import sender_process_here
    return sender_process_here


def open_site(toolstack=None, host=None, peer=True, agent=None, peer_agent=None, peer_uri=None,
              ssh="ssh", key_file=None, memory_only=False, tracker=None, xenstores=True):
    """Build what a command needs from its options.

    :param host: the peer's name or address (None: no peer)
    :param peer: whether the command talks to the peer's toolstack.  A
        simulated host's disks are reached through its peer's agent, so the
        sim always builds the peer when ``host`` is given.
    :param xenstores: build the xenstore connections (status keys)
    :returns: a :class:`Site`
    :raises ValidationError: inconsistent options
    """
    kind = _kind(toolstack)
    if kind == "sim":
        ts = local_toolstack(kind, agent=agent)
        xs = _sim_xenstore(ts) if xenstores else None
        other = peer_toolstack(kind, host, peer_agent=peer_agent) if host is not None else None
        peer_xs = _sim_xenstore(other) if xenstores and other is not None else None
        from xen_remus_ext.sim.disksync import SimDiskSync
        disks = SimDiskSync([t for t in (ts, other) if t is not None])
        return Site(ts, other, disks, xs, peer_xs)
    xs = _pyxs_store(must_exist=True) if xenstores else None
    try:
        ts = local_toolstack(kind, memory_only=memory_only, tracker=tracker, xenstore=xs)
        other = None
        if host is not None and peer:
            other = peer_toolstack(kind, host, ssh=ssh, peer_uri=peer_uri)
    except Exception:
        if xs is not None:
            xs.close()
        raise
    return Site(ts, other, resync_disk_sync(ssh, key_file), xs, None, supervise=supervisor_starter(kind, ssh))
