"""The :class:`ports.DiskSync` of real disks, over the resync engine.

Data moves with :func:`resync.api.resync`; generations are read with
:mod:`resync.meta` (locally, from the receiver's handshake for a copy behind
TCP, or from ``xen-remus meta`` run over ssh on the peer).  ``dest`` is what
``resync()`` takes: a local path, ``HOST:PATH`` (ssh) or
``tcp://HOST:PORT/EXPORT``.
"""
from __future__ import absolute_import, division, print_function

import errno
import os

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.ports import DiskSync

RESULT_FIELDS = DiskSync.RESULT_FIELDS


def is_local(dest):
    return dest.startswith("/") and "://" not in dest


def result_to_dict(res):
    """A ``ResyncResult`` (namedtuple or object) as a JSON-able dict."""
    if isinstance(res, dict):
        return dict((k, res.get(k)) for k in RESULT_FIELDS)
    out = {}
    for k in RESULT_FIELDS:
        v = getattr(res, k, None)
        if k == "extents" and v is not None and not isinstance(v, (int, float)):
            v = len(v)
        out[k] = v
    return out


def local_state(path):
    """:meth:`ports.DiskSync.peer_state` of a local file or device."""
    from xen_remus_ext.resync import meta
    if not os.path.exists(path):
        return {"exists": False, "size": None, "meta": None}
    try:
        size = _file_size(path)
    except OSError:
        size = None
    m = meta.load(path)
    return {"exists": True, "size": size, "meta": m.to_dict() if m is not None else None}


def create_sparse(path, size):
    """Create ``path`` as a sparse image of ``size`` bytes (holes only).

    :raises ResyncError: it exists already (whatever it holds), or cannot be
        created.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if getattr(exc, "errno", None) == errno.EEXIST:
            raise ResyncError("disk %s: expected it absent to create it, found it existing; refusing "
                              "to replace it" % path)
        raise ResyncError("disk %s: cannot create: %s" % (path, getattr(exc, "strerror", None) or exc))
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise ResyncError("disk %s: cannot size it to %d bytes: %s" % (path, size, exc))
    os.close(fd)
    return path


def _file_size(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


class ResyncDiskSync(DiskSync):
    """The real disks: resync/api.py for data, resync/meta.py for generations.

    :param runner: the :class:`ports.Runner` of ``ssh HOST xen-remus meta``
        (default: subprocess)
    """

    def __init__(self, ssh="ssh", key_file=None, mode="auto", runner=None):
        if runner is None:
            from xen_remus_ext.toolstack.runner import SubprocessRunner
            runner = SubprocessRunner()
        self.runner = runner
        self.ssh = ssh
        self.key_file = key_file
        self.mode = mode
        self._prepared = {}     # dest -> resync.api.Prepared (prepare)

    def size(self, path):
        try:
            return _file_size(path)
        except OSError as exc:
            raise ResyncError("disk %s: expected a readable image or device, got %s" % (path, exc))

    def _probe(self, dest):
        """The receiver's handshake: ``{"size", "meta"}`` of the peer's copy."""
        from xen_remus_ext.resync.sender import SenderSession
        from xen_remus_ext.resync.transport import connect
        conn = connect(dest, ssh=self.ssh, key_file=self.key_file)
        try:
            sess = SenderSession(conn)
            info = sess.handshake()
            sess.bye()
        finally:
            conn.close()
        return info

    def peer_size(self, dest):
        if is_local(dest):
            try:
                return _file_size(dest)
            except OSError:
                return None
        return self._probe(dest).get("size")

    def relation(self, src, dest):
        from xen_remus_ext.resync import meta
        # what the engine's meta.ensure would give, without writing it (a check changes nothing)
        smeta = meta.load(src) or meta.DiskMeta(os.path.realpath(src), self.size(src), True)
        if is_local(dest):
            return meta.compare(smeta, meta.load(dest))
        info = self._probe(dest)
        return meta.compare(smeta, meta.DiskMeta.from_dict(info["meta"]) if info.get("meta") else None)

    def mark_protected(self, path):
        """Remus protects ``path``'s domain again with both copies in sync:
        the copy's bitmap generation becomes history (resync/meta.py)."""
        from xen_remus_ext.resync import meta
        if meta.load(path) is not None:
            meta.clear_bitmap(path)

    def _remote_meta(self, host, args):
        """``xen-remus meta ARGS --json`` on ``host`` over ssh: its JSON answer."""
        import json
        from xen_remus_ext.resync.transport import remote_argv, remote_command
        argv = remote_argv(self.ssh, host, remote_command() + ["-q", "meta"] + list(args) + ["--json"])
        rc, out, err = self.runner.run(argv)
        text = out.decode("utf-8", "replace").strip() if isinstance(out, bytes) else (out or "").strip()
        if rc != 0:
            msg = (err.decode("utf-8", "replace") if isinstance(err, bytes) else err or "").strip()
            raise ResyncError("%s: `xen-remus meta %s` failed (exit %d): %s"
                              % (host, " ".join(args), rc, msg.splitlines()[-1] if msg else "no message"))
        try:
            return json.loads(text.splitlines()[-1])
        except (ValueError, IndexError):
            raise ResyncError("%s: `xen-remus meta %s`: expected one JSON object, got %r"
                              % (host, " ".join(args), text[:200]))

    def peer_state(self, dest):
        from xen_remus_ext.resync.transport import parse_dest
        where = parse_dest(dest)
        if where[0] == "local":
            return local_state(where[1])
        if where[0] == "ssh":
            d = self._remote_meta(where[1], ["show", where[2]])
            return {"exists": bool(d.get("exists")), "size": d.get("size"), "meta": d.get("meta")}
        info = self._probe(dest)     # a tcp:// export exists by definition
        return {"exists": True, "size": info.get("size"), "meta": info.get("meta")}

    def create(self, dest, size):
        from xen_remus_ext.resync.transport import parse_dest
        where = parse_dest(dest)
        if where[0] == "local":
            create_sparse(where[1], size)
        elif where[0] == "ssh":
            self._remote_meta(where[1], ["create", "--size", str(size), where[2]])
        else:
            raise ResyncError("%s: a tcp:// export cannot be created from here; create it on the receiver's "
                              "host (xen-remus meta create --size %d PATH)" % (dest, size))

    def prepare(self, dest):
        """:meth:`ports.DiskSync.prepare`: :func:`resync.api.prepare` for a
        remote ``dest`` (ssh or TCP); a local one has nothing to open."""
        from xen_remus_ext.resync import api
        if is_local(dest):
            return None
        old = self._prepared.pop(dest, None)
        if old is not None:
            old.close()
        p = api.prepare(dest, mode=self.mode, ssh=self.ssh, key_file=self.key_file)
        self._prepared[dest] = p
        return p.seconds

    def release_prepared(self):
        while self._prepared:
            self._prepared.popitem()[1].close()

    def sync(self, src, dest, tracker=None, rate=None, verify=False, discard_target=False,
             final=False, events=None):
        from xen_remus_ext.resync import api
        res = api.resync(src, dest, mode=self.mode, tracker=tracker, rate=None if final else rate,
                         verify=verify, discard_target=discard_target, ssh=self.ssh,
                         key_file=self.key_file, events=events, prepared=self._prepared.pop(dest, None))
        return result_to_dict(res)
