"""Putting a disk image behind ``xen-remus replicate serve`` and the kernel's
NBD client, and taking it away again (adapter; ``xen-remus replicate
attach|detach``).

``attach IMAGE`` starts a detached ``replicate serve IMAGE`` on the socket
paths :func:`registry.sockets_for` gives (the same on both hosts for the
same image path), connects ``nbd-client -unix SOCKET DEV -N NAME -b 512``
to it, records DEV in the server's record, and returns the record: DEV is
what the domain's config names (``phy:/dev/nbd0``).  It is idempotent: an
image already attached (live server, device connected) is left as it is,
and a server already running without a device is reused.

``detach IMAGE|DEV`` refuses while a domain's disk is DEV, disconnects the
device (``nbd-client -d``), stops the server (SIGTERM), which removes its
record and sockets; an image not attached is nothing to do.

What the kernel has is read from ``sys_root`` (``/sys``): the nbd module
(``module/nbd``) and, per device, whether a client holds it
(``block/nbdN/pid``).
"""
from __future__ import absolute_import, division, print_function

import errno
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time

from xen_remus_ext.compat import to_text
from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication import registry

LOG = logging.getLogger(__name__)

_NBD = re.compile(r"^nbd(\d+)$")
#: unix socket addresses hold 107 bytes and a NUL
SOCKET_MAX = 107


def which(name, path=None):
    """:returns: the executable ``name`` on ``path`` (default ``$PATH``), or None."""
    for d in (path if path is not None else os.environ.get("PATH", "")).split(os.pathsep):
        cand = os.path.join(d or ".", name)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def _run(argv, timeout=60):
    try:
        proc = subprocess.Popen(argv, stdin=open(os.devnull, "rb"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as exc:
        return 127, "", "%s: %s" % (argv[0], exc.strerror or exc)
    out, err = proc.communicate()          # nbd-client and modprobe do not linger
    return proc.returncode, to_text(out, errors="replace"), to_text(err, errors="replace")


def _last_line(text):
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip() and ln.strip() != "Exiting."]
    return lines[-1] if lines else "no message"


class Host(object):
    """What attach and detach touch on this host, in one place (tests give
    a temp ``sys_root`` and their own ``nbd_client``/``modprobe``)."""

    def __init__(self, sys_root="/sys", nbd_client=None, modprobe=None, run=_run, base=None):
        self.sys_root = sys_root
        self.nbd_client = nbd_client
        self.modprobe = modprobe
        self.run = run
        self.base = base

    def client(self):
        path = self.nbd_client or which("nbd-client") or which("nbd-client", "/usr/sbin:/sbin")
        if path is None:
            raise ReplicationError("nbd-client not found on PATH: install Debian's nbd-client package "
                                   "(the kernel's NBD client is set up by it)")
        return path

    def ensure_module(self):
        if os.path.isdir(os.path.join(self.sys_root, "module", "nbd")):
            return
        modprobe = self.modprobe or which("modprobe") or which("modprobe", "/usr/sbin:/sbin")
        why = "modprobe not found"
        if modprobe is not None:
            rc, _out, err = self.run([modprobe, "nbd"])
            if rc == 0 and os.path.isdir(os.path.join(self.sys_root, "module", "nbd")):
                LOG.info("loaded the nbd kernel module")
                return
            why = "modprobe nbd: exit %d: %s" % (rc, _last_line(err))
        raise ReplicationError("the nbd kernel module is not loaded and cannot be (%s): the kernel needs "
                               "CONFIG_BLK_DEV_NBD (Debian's kernels have it as a module)" % why)

    def devices(self):
        """The NBD devices the kernel has, by number."""
        try:
            names = os.listdir(os.path.join(self.sys_root, "block"))
        except OSError:
            return []
        found = [(int(m.group(1)), n) for n, m in ((n, _NBD.match(n)) for n in names) if m]
        return ["/dev/" + n for _, n in sorted(found)]

    def connected(self, dev):
        return registry.connected(dev, self.sys_root)

    def holder_pid(self, dev):
        try:
            with open(os.path.join(self.sys_root, "block", registry.device_name(dev), "pid")) as f:
                return f.read().strip()
        except (IOError, OSError):
            return None


def _live(rec, base):
    """The record's server lives and answers on its control socket."""
    if rec is None or not registry.alive(rec["pid"]):
        return False
    from xen_remus_ext.replication.service import query_server
    try:
        info = query_server(rec["control"], timeout=5.0)
    except ReplicationError as exc:
        LOG.warning("%s: its server (pid %d) does not answer: %s", rec["image"], rec["pid"], exc)
        return False
    return os.path.abspath(info.get("path") or "") == rec["image"]


def _check_image(image):
    try:
        st = os.stat(image)
    except OSError as exc:
        raise ReplicationError("attach %s: %s" % (image, exc.strerror or exc))
    if not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise ReplicationError("attach %s: expected a disk image file or a block device (an LV)" % image)


def _pick_device(host, device, image, base):
    """The device to connect: ``device`` if free, else the first free one."""
    others = dict((r["device"], r) for r in registry.entries(base)
                  if r["device"] and r["image"] != image and registry.alive(r["pid"]))
    if device is not None:
        if not _NBD.match(registry.device_name(device)):
            raise ReplicationError("attach --device %s: expected an NBD device (/dev/nbdN)" % device)
        state = host.connected(device)
        if state is None:
            raise ReplicationError("attach --device %s: the kernel has no such device (%s/block/%s); "
                                   "load nbd with more devices: modprobe nbd nbds_max=N"
                                   % (device, host.sys_root, registry.device_name(device)))
        if state or device in others:
            who = others.get(device)
            raise ReplicationError("attach --device %s: device busy: %s" % (
                device, "it serves %s (server pid %d)" % (who["image"], who["pid"]) if who else
                "an NBD client holds it (pid %s)" % host.holder_pid(device)))
        return device
    free = [d for d in host.devices() if not host.connected(d) and d not in others]
    if not free:
        raise ReplicationError("attach: no free NBD device (%d, all connected); load nbd with more: "
                               "modprobe nbd nbds_max=N, or give --device" % len(host.devices()))
    return free[0]


def _start_server(image, name, base, timeout):
    nbd, control = registry.sockets_for(image, base)
    if len(control) > SOCKET_MAX:
        raise ReplicationError("attach %s: the control socket path %s is longer than a unix socket "
                               "address holds (%d bytes)" % (image, control, SOCKET_MAX))
    d = registry.directory(base)
    if not os.path.isdir(d):
        os.makedirs(d, 0o755)
    ready = control[:-len(".ctl")] + ".ready"
    log = control[:-len(".ctl")] + ".log"
    for stale in (ready,):
        if os.path.exists(stale):
            os.unlink(stale)
    argv = [sys.executable, "-m", "xen_remus_ext", "replicate", "serve", image, "--nbd", "unix:" + nbd,
            "--control", control, "--name", name, "--ready-file", ready]
    env = dict(os.environ)
    if base is not None:
        env["XEN_REMUS_RUN_DIR"] = base
    with open(log, "ab") as logf:
        # its own session: it outlives this command and the terminal it ran from
        proc = subprocess.Popen(argv, stdin=open(os.devnull, "rb"), stdout=logf, stderr=logf,
                                preexec_fn=os.setsid, env=env, close_fds=True)
    end = time.time() + timeout
    while not os.path.exists(ready):
        if proc.poll() is not None:
            raise ReplicationError("attach %s: replicate serve exited with status %d: %s (log %s)"
                                   % (image, proc.returncode, _tail(log), log))
        if time.time() > end:
            _stop(proc.pid, 5.0)
            raise ReplicationError("attach %s: replicate serve did not listen within %.0f s (log %s)"
                                   % (image, timeout, log))
        time.sleep(0.05)
    LOG.info("attach %s: replicate serve pid %d on %s, control %s", image, proc.pid, nbd, control)
    return proc.pid


def _tail(path):
    try:
        with open(path, "rb") as f:
            return _last_line(to_text(f.read()[-4096:], errors="replace"))
    except (IOError, OSError):
        return "no log"


def _stop(pid, timeout):
    """SIGTERM ``pid``, then wait up to ``timeout`` s for it to go (SIGKILL after)."""
    try:
        os.kill(pid, signal.SIGTERM)
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return True
        raise ReplicationError("cannot stop replicate serve pid %d: %s" % (pid, exc.strerror))
    end = time.time() + timeout
    while time.time() < end:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)      # our child (attach's own failure path)
            if done:
                return True
        except OSError:
            pass
        if not registry.alive(pid):
            return True
        time.sleep(0.05)
    return False


def attach(image, device=None, name="xvda", host=None, timeout=30.0):
    """Serve ``image`` and connect an NBD device to it.

    :returns: ``(record, changed)``: the server's record (``device`` set)
        and whether anything was started or connected.
    :raises ReplicationError: naming what is missing or busy.
    """
    host = host or Host()
    base = host.base
    image = os.path.abspath(image)
    _check_image(image)
    rec = registry.load(image, base)
    if rec is not None and not _live(rec, base):
        LOG.info("attach %s: dropping the record of server pid %d (gone)", image, rec["pid"])
        registry.unregister(image, rec["pid"], base)
        rec = None
    if rec is not None and rec["device"] and host.connected(rec["device"]):
        if device is not None and registry.device_name(device) != registry.device_name(rec["device"]):
            raise ReplicationError("attach %s --device %s: already attached on %s; detach it first"
                                   % (image, device, rec["device"]))
        return rec, False
    client = host.client()
    host.ensure_module()
    dev = _pick_device(host, device, image, base)
    started = None
    if rec is None:
        started = _start_server(image, name, base, timeout)
        rec = registry.load(image, base)
        if rec is None or rec["pid"] != started:
            _stop(started, 5.0)
            raise ReplicationError("attach %s: replicate serve (pid %d) listens but recorded nothing in %s"
                                   % (image, started, registry.directory(base)))
    sock = rec["nbd"][len("unix:"):] if rec["nbd"].startswith("unix:") else None
    if sock is None:
        raise ReplicationError("attach %s: its server listens on %s; attach connects over a unix socket only"
                               % (image, rec["nbd"]))
    rc, _out, err = host.run([client, "-unix", sock, dev, "-N", rec["name"], "-b", "512"])
    if rc != 0 or not host.connected(dev):
        why = "exit %d: %s" % (rc, _last_line(err)) if rc != 0 else "exit 0, but the kernel shows no client on it"
        if started is not None:
            _stop(started, 10.0)
        raise ReplicationError("attach %s: nbd-client could not connect %s to %s (%s)%s"
                               % (image, dev, sock, why, "; the server started for it is stopped again"
                                  if started is not None else ""))
    rec = registry.set_device(image, dev, rec["pid"], base)
    LOG.info("attach %s: %s connected (server pid %d, control %s)", image, dev, rec["pid"], rec["control"])
    return rec, True


def domains_using(dev, xl=None, run=_run):
    """Names of the xl domains whose disk is ``dev`` (``xl list -l``), or
    [] when there is no xl here to ask."""
    xl = xl or which("xl") or which("xl", "/usr/sbin:/sbin")
    if xl is None:
        return []
    import json
    rc, out, err = run([xl, "list", "-l"])
    if rc != 0:
        raise ReplicationError("detach %s: cannot tell whether a domain uses it: xl list -l: exit %d: %s"
                               % (dev, rc, _last_line(err)))
    try:
        doms = json.loads(out or "[]")
    except ValueError as exc:
        raise ReplicationError("detach %s: cannot tell whether a domain uses it: xl list -l: %s" % (dev, exc))
    users = []
    for d in doms if isinstance(doms, list) else []:
        cfg = d.get("config") or {} if isinstance(d, dict) else {}
        for disk in cfg.get("disks") or []:
            if disk.get("pdev_path") and registry.device_name(disk["pdev_path"]) == registry.device_name(dev):
                users.append((cfg.get("c_info") or {}).get("name") or str(d.get("domid")))
    return users


def find(target, base=None):
    """The record of ``target`` (an image path or an NBD device), or None."""
    if target.startswith("/dev/"):
        for rec in registry.entries(base):
            if rec["device"] and registry.device_name(rec["device"]) == registry.device_name(target):
                return rec
        return None
    return registry.load(os.path.abspath(target), base)


def detach(target, host=None, users=domains_using, timeout=30.0):
    """Disconnect ``target``'s NBD device and stop its server.

    :returns: the record detached, or None (``target`` was not attached).
    :raises ReplicationError: a domain uses the device, or a step failed.
    """
    host = host or Host()
    rec = find(target, host.base)
    if rec is None:
        return None
    dev = rec["device"]
    if dev and host.connected(dev):
        using = users(dev)
        if using:
            raise ReplicationError("detach %s: %s is the disk of domain %s: shut it down or move it first"
                                   % (target, dev, ", ".join(using)))
        rc, _out, err = host.run([host.client(), "-d", dev])
        if rc != 0:
            raise ReplicationError("detach %s: nbd-client -d %s: exit %d: %s" % (target, dev, rc, _last_line(err)))
        LOG.info("detach %s: %s disconnected", rec["image"], dev)
    if registry.alive(rec["pid"]):
        if not _stop(rec["pid"], timeout):
            raise ReplicationError("detach %s: replicate serve pid %d still runs %.0f s after SIGTERM"
                                   % (target, rec["pid"], timeout))
        LOG.info("detach %s: replicate serve pid %d stopped", rec["image"], rec["pid"])
    registry.unregister(rec["image"], rec["pid"], host.base)
    return rec
