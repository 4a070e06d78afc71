"""Which disks ``xen-remus replicate serve`` serves on this host (adapter).

Each server records itself in ``<run dir>/replicate/<key>.json`` once its
sockets listen, and removes the record when it exits; ``xen-remus replicate
attach`` adds the NBD device the kernel's client connected to it.  The run
dir is ``$XEN_REMUS_RUN_DIR``, else ``/run/xen-remus`` (a tmpfs: the
records go with a reboot, as the servers do).

A record (JSON)::

    image    the served file or block device (absolute path)
    nbd      where its NBD server listens (unix:PATH or tcp:HOST:PORT)
    control  its control socket (the relay's --control)
    name     the NBD export name
    pid      the server's process
    device   the NBD device (/dev/nbdN) the kernel's client connected, or null

``<key>`` and the socket paths :func:`sockets_for` gives depend only on the
image's path, so both hosts of a pair, which keep their copies at the same
path, get the same control socket path, as the relay on either needs.

:func:`lookup_device` answers what ``protect``/``failback`` ask: is this
domain's backend device the NBD device of a live server here, and on which
control socket.  A record counts only while its server's process lives,
answers on its control socket naming the same image, and (``sys_root``) the
kernel says the device is connected.
"""
from __future__ import absolute_import, division, print_function

import errno
import hashlib
import json
import logging
import os
import re

from xen_remus_ext.compat import atomic_write, pid_exists, to_bytes, to_text
from xen_remus_ext.errors import ReplicationError

LOG = logging.getLogger(__name__)

DEFAULT_RUN_DIR = "/run/xen-remus"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.+-]")
FIELDS = ("image", "nbd", "control", "name", "pid", "device")


def run_dir():
    """:returns: the run directory in force now (read at each call)."""
    return os.environ.get("XEN_REMUS_RUN_DIR") or DEFAULT_RUN_DIR


def directory(base=None):
    return os.path.join(base or run_dir(), "replicate")


def key_for(image):
    """The record's name for ``image``: its base name (made safe) and a
    digest of its absolute path (two images of one name stay apart, and the
    socket paths stay within the 108 bytes of a unix socket address)."""
    path = os.path.abspath(image)
    stem = _UNSAFE.sub("_", os.path.basename(path))[:40] or "disk"
    return "%s-%s" % (stem, hashlib.sha256(to_bytes(path)).hexdigest()[:10])


def entry_path(image, base=None):
    return os.path.join(directory(base), key_for(image) + ".json")


def sockets_for(image, base=None):
    """``(nbd socket path, control socket path)`` for serving ``image``."""
    stem = os.path.join(directory(base), key_for(image))
    return stem + ".nbd", stem + ".ctl"


def _write(path, rec):
    d = os.path.dirname(path)
    try:
        if not os.path.isdir(d):
            os.makedirs(d, 0o755)
        atomic_write(path, to_bytes(json.dumps(rec, sort_keys=True) + "\n"), mode=0o644)
    except (IOError, OSError) as exc:
        raise ReplicationError("served-disk record %s: cannot write: %s" % (path, exc.strerror or exc))


def register(image, nbd, control, name, pid, device=None, base=None):
    """Record the server of ``image`` (replacing an older record)."""
    rec = {"image": os.path.abspath(image), "nbd": nbd, "control": os.path.abspath(control), "name": name,
           "pid": int(pid), "device": device}
    _write(entry_path(image, base), rec)
    return rec


def load(image, base=None):
    """:returns: the record of ``image``, or None (none, or unreadable: logged)."""
    return _read(entry_path(image, base))


def _read(path):
    try:
        with open(path, "rb") as f:
            rec = json.loads(to_text(f.read()))
    except (IOError, OSError) as exc:
        if exc.errno != errno.ENOENT:
            LOG.warning("served-disk record %s: unreadable: %s", path, exc)
        return None
    except ValueError as exc:
        LOG.warning("served-disk record %s: not JSON: %s", path, exc)
        return None
    if not isinstance(rec, dict) or sorted(rec) != sorted(FIELDS) or not isinstance(rec.get("pid"), int):
        LOG.warning("served-disk record %s: expected the fields %s, got %r", path, ", ".join(FIELDS), rec)
        return None
    return rec


def set_device(image, device, pid, base=None):
    """Record ``device`` (or None) in the live record of ``image``'s server ``pid``.

    :raises ReplicationError: no record of that server."""
    rec = load(image, base)
    if rec is None or rec["pid"] != pid:
        raise ReplicationError("%s: expected a served-disk record of server pid %d in %s, found %s"
                               % (image, pid, directory(base), "none" if rec is None else "pid %d" % rec["pid"]))
    rec["device"] = device
    _write(entry_path(image, base), rec)
    return rec


def unregister(image, pid, base=None):
    """Remove the record of ``image`` if it is still server ``pid``'s."""
    path = entry_path(image, base)
    rec = _read(path)
    if rec is not None and rec["pid"] == pid:
        try:
            os.unlink(path)
        except OSError as exc:
            if exc.errno != errno.ENOENT:
                LOG.warning("served-disk record %s: cannot remove: %s", path, exc)


def entries(base=None):
    """:returns: every readable record here, sorted by image."""
    d = directory(base)
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = [_read(os.path.join(d, n)) for n in names if n.endswith(".json")]
    return sorted((r for r in out if r is not None), key=lambda r: r["image"])


alive = pid_exists


def device_name(dev):
    """``/dev/nbd0`` (or a link to it) -> ``nbd0``."""
    return os.path.basename(os.path.realpath(dev))


def connected(dev, sys_root="/sys"):
    """The kernel's NBD client has ``dev`` connected (``/sys/block/nbdN/pid``
    exists while a client holds it): None when the kernel has no such
    device at all."""
    block = os.path.join(sys_root, "block", device_name(dev))
    if not os.path.isdir(block):
        return None
    return os.path.exists(os.path.join(block, "pid"))


def _same_device(a, b):
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        sa, sb = os.stat(a), os.stat(b)
    except OSError:
        return False
    return bool(sa.st_rdev) and sa.st_rdev == sb.st_rdev


def lookup_device(dev, base=None, sys_root="/sys", query=None):
    """The control socket of the live server whose NBD device ``dev`` is,
    or None.  ``query(control) -> {"path": ...}`` asks the server
    (default: :func:`service.query_server`)."""
    if query is None:
        from xen_remus_ext.replication.service import query_server

        def query(control):
            return query_server(control, timeout=5.0)
    for rec in entries(base):
        if not rec["device"] or not _same_device(rec["device"], dev):
            continue
        if not alive(rec["pid"]):
            LOG.info("%s: its server (pid %d, %s) is gone", dev, rec["pid"], rec["image"])
            continue
        if not connected(dev, sys_root):
            LOG.info("%s: not connected to an NBD server (no %s/block/%s/pid)", dev, sys_root, device_name(dev))
            continue
        try:
            info = query(rec["control"])
        except ReplicationError as exc:
            LOG.warning("%s: its server's control socket does not answer: %s", dev, exc)
            continue
        if os.path.abspath(info.get("path") or "") != rec["image"]:
            LOG.warning("%s: the server on %s serves %s, its record says %s", dev, rec["control"],
                        info.get("path"), rec["image"])
            continue
        return rec["control"]
    return None


def live_entries(base=None):
    """:returns: the records whose server process still runs."""
    return [r for r in entries(base) if alive(r["pid"])]


def remote_lister(argv, runner):
    """A callable listing the live servers of another host: it runs
    ``argv`` (``ssh HOST xen-remus replicate list --json``) through
    ``runner`` and reads its JSON.

    :raises ReplicationError: the command failed or answered no list."""
    def served():
        try:
            rc, out, err = runner.run(argv, timeout=60)
        except (IOError, OSError) as exc:
            raise ReplicationError("%s: cannot run: %s" % (" ".join(argv), exc))
        if rc != 0:
            msg = to_text(err or b"", errors="replace").strip().splitlines()
            raise ReplicationError("%s: exit %d: %s" % (" ".join(argv), rc, msg[-1] if msg else "no message"))
        try:
            rows = json.loads(to_text(out or b"", errors="replace"))["served"]
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplicationError("%s: expected {\"served\": [...]}, got: %s" % (" ".join(argv), exc))
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ReplicationError("%s: expected a list of served disks, got %r" % (" ".join(argv), rows))
        return [r for r in rows if r.get("running", True)]
    return served
