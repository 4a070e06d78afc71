"""The failback journal: one JSON file per domain, replaced atomically.

Location: ``<state dir>/failback/<domain>.json`` where the state dir is
``paths.state_dir()`` (``$XEN_REMUS_STATE_DIR``, else
``/var/lib/xen-remus-ext``).  Every write goes to a temp file, is fsynced,
renamed over the old file and the directory fsynced, so a crash leaves
either the old or the new journal, never a torn one.

Each saved record carries ``sum``, the SHA-256 of its canonical JSON (keys
sorted, ``sum`` left out): a byte changed on disk that still parses as a
valid record is refused by name instead of steering a resume.

The record (a dict; ``version`` 2)::

    version, domain, host (peer), local_host, mode, toolstack,
    state, step (running step or null), attempt, error,
    options {...}, disks [{vdev, path, dest, precopy [...], final {...}}],
    delta {sent, by, at, seconds} (:class:`Delta`), timing {step: [start, end]},
    history [[t, event, ...]]

The xend migration hook (failback/delta.py) loads and saves the same file.
"""
from __future__ import absolute_import, division, print_function

import collections
import errno
import hashlib
import json
import logging
import numbers
import os
import re

from xen_remus_ext.compat import atomic_write, integer_types, string_types, to_bytes, to_text
from xen_remus_ext.errors import FailbackError, JournalError
from xen_remus_ext.failback import machine
from xen_remus_ext.paths import state_dir

LOG = logging.getLogger(__name__)

VERSION = 2  # 2: every saved record carries its SHA-256 ``sum``
_NAME_RE = re.compile(r"^[A-Za-z0-9_.@+-]+$")
MAX_HISTORY = 200


def journal_dir(base=None):
    return os.path.join(base or state_dir(), "failback")


def journal_path(domain, base=None):
    """:raises JournalError: ``domain`` cannot name a file."""
    domain = to_text(domain)
    if not _NAME_RE.match(domain) or domain in (".", ".."):
        raise JournalError("domain name %r: expected letters, digits and _.@+- only (it names the journal file)"
                           % (domain,))
    return os.path.join(journal_dir(base), domain + ".json")


class Delta(collections.namedtuple("Delta", "sent by at seconds")):
    """The journal's record of the final disk delta: ``sent`` (bool), who
    sent it (``by``: ``orchestrator`` or ``xend-hook``), when (``at``, epoch
    seconds) and how long it took (``seconds``).  Checked in ``__new__``."""

    __slots__ = ()
    SENDERS = ("orchestrator", "xend-hook")

    def __new__(cls, sent=False, by=None, at=None, seconds=None):
        if not isinstance(sent, bool):
            raise JournalError("delta.sent: expected true or false, got %r" % (sent,))
        if by is not None and (not isinstance(by, string_types) or by not in cls.SENDERS):
            raise JournalError("delta.by: expected one of %s, got %r" % (", ".join(cls.SENDERS), by))
        for name, value in (("at", at), ("seconds", seconds)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
                raise JournalError("delta.%s: expected a number, got %r" % (name, value))
        if sent and by is None:
            raise JournalError("delta: expected who sent it (by), got none")
        return super(Delta, cls).__new__(cls, sent, by, at, seconds)

    @classmethod
    def from_dict(cls, d):
        """:raises JournalError: not a delta record."""
        if not isinstance(d, dict):
            raise JournalError("delta: expected an object, got %r" % (d,))
        unknown = sorted(set(d) - set(cls._fields))
        if unknown:
            raise JournalError("delta: unexpected fields %s" % ", ".join(unknown))
        return cls(**d)

    def to_dict(self):
        return dict((k, v) for k, v in self._asdict().items() if k == "sent" or v is not None)


def delta_of(rec):
    """:returns: the :class:`Delta` of a journal record."""
    return Delta.from_dict(rec.get("delta", {"sent": False}))


def new_record(domain, host, mode, local_host=None, toolstack=None, options=None, now=None):
    machine.check_mode(mode)
    return {
        "version": VERSION, "domain": domain, "host": host, "local_host": local_host,
        "mode": mode, "toolstack": toolstack, "state": machine.NEW, "step": None,
        "attempt": 0, "error": None, "options": dict(options or {}), "disks": [],
        "delta": Delta().to_dict(), "timing": {}, "history": [[now, "created", machine.NEW]],
    }


_TEXT = string_types
_OPT_TEXT = string_types + (type(None),)
#: the record's fields and the JSON types each may hold (absent is checked above)
_FIELD_TYPES = {"domain": _TEXT, "host": _TEXT, "local_host": _OPT_TEXT, "mode": _TEXT, "toolstack": _OPT_TEXT,
                "state": _TEXT, "step": _OPT_TEXT, "attempt": integer_types, "error": _OPT_TEXT,
                "options": (dict,), "disks": (list,), "delta": (dict,), "timing": (dict,), "history": (list,)}
_DISK_TYPES = {"vdev": _TEXT, "src": _TEXT, "dest": _TEXT, "path": _OPT_TEXT, "precopy": (list,),
               "final": (dict, type(None))}


def _tname(t):
    if t is type(None):
        return "null"
    if t in (dict, list, bool):
        return {dict: "an object", list: "a list", bool: "a boolean"}[t]
    return "a number" if t in (float,) + integer_types else "text"


def _check_types(obj, types, path, prefix):
    """:raises JournalError: a field present with a JSON type it may not hold."""
    for key, allowed in sorted(types.items()):
        v = obj.get(key)
        if key in obj and (not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed)):
            shown = repr(v)
            raise JournalError("%s: %s%s: expected %s, got %s %s"
                               % (path, prefix, key, " or ".join(sorted(set(_tname(t) for t in allowed))),
                                  _tname(type(v)), shown if len(shown) <= 60 else shown[:57] + "..."))


def check_record(rec, path="<journal>"):
    """:raises JournalError: the record lacks a field or has the wrong version."""
    if not isinstance(rec, dict):
        raise JournalError("%s: expected a JSON object, got %s" % (path, type(rec).__name__))
    if rec.get("version") != VERSION:
        raise JournalError("%s: expected journal version %d, got %r" % (path, VERSION, rec.get("version")))
    for key in ("domain", "host", "mode", "state", "disks", "delta", "history"):
        if key not in rec:
            raise JournalError("%s: field %r missing" % (path, key))
    _check_types(rec, _FIELD_TYPES, path, "")
    for i, disk in enumerate(rec["disks"]):
        if not isinstance(disk, dict):
            raise JournalError("%s: disks[%d]: expected an object, got %s" % (path, i, _tname(type(disk))))
        _check_types(disk, _DISK_TYPES, path, "disks[%d]." % i)
    for i, event in enumerate(rec["history"]):
        if not isinstance(event, list):
            raise JournalError("%s: history[%d]: expected a list, got %s" % (path, i, _tname(type(event))))
    if rec["mode"] not in machine.MODES:
        raise JournalError("%s: mode: expected one of %s, got %r" % (path, ", ".join(machine.MODES), rec["mode"]))
    try:
        machine.index_of(rec["mode"], rec["state"])
    except FailbackError as exc:
        raise JournalError("%s: %s" % (path, exc))
    try:
        delta_of(rec)
    except JournalError as exc:
        raise JournalError("%s: %s" % (path, exc))
    return rec


def _checksum(rec):
    body = dict((k, v) for k, v in rec.items() if k != "sum")
    return hashlib.sha256(to_bytes(json.dumps(body, sort_keys=True))).hexdigest()


def load(domain, base=None):
    """:returns: the journal record of ``domain``, or None when there is none.

    :raises JournalError: the file exists but is unreadable or invalid.
    """
    path = journal_path(domain, base)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except (IOError, OSError) as exc:
        if exc.errno == errno.ENOENT:
            return None
        raise JournalError("%s: cannot read: %s" % (path, exc))
    try:
        rec = json.loads(to_text(data))
    except ValueError as exc:
        raise JournalError("%s: expected JSON, got a parse error: %s" % (path, exc))
    except RuntimeError:      # RecursionError on 3 (RuntimeError on 2.7)
        raise JournalError("%s: expected JSON, got values nested too deep to decode" % path)
    check_record(rec, path)
    stored = rec.pop("sum", None)
    if stored != _checksum(rec):
        raise JournalError("%s: checksum mismatch (expected sha256 %s, got %s): the journal was damaged or edited; "
                           "move it aside and see docs/chaos.md before rerunning" % (path, _checksum(rec), stored))
    return rec


def save(rec, base=None):
    """Write ``rec`` atomically (temp file, fsync, rename, fsync dir)."""
    path = journal_path(rec["domain"], base)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        try:
            os.makedirs(d, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise JournalError("%s: cannot create: %s" % (d, exc))
    if len(rec.get("history", ())) > MAX_HISTORY:
        rec["history"] = rec["history"][:1] + rec["history"][-(MAX_HISTORY - 1):]
    rec.pop("sum", None)
    data = json.dumps(dict(rec, sum=_checksum(rec)), indent=1, sort_keys=True)
    try:
        atomic_write(path, to_bytes(data + "\n"))
    except (IOError, OSError) as exc:
        raise JournalError("%s: cannot write: %s" % (path, exc))
    return path


def remove(domain, base=None):
    path = journal_path(domain, base)
    try:
        os.unlink(path)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            raise JournalError("%s: cannot remove: %s" % (path, exc))


def list_domains(base=None):
    """:returns: sorted names of the domains that have a journal."""
    d = journal_dir(base)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    return sorted(n[:-5] for n in names if n.endswith(".json") and ".tmp." not in n)


class JournalLock(object):
    """An exclusive ``flock`` on ``<journal dir>/<domain>.lock``: whoever
    changes the domain's state (the Pacemaker agent's actions, its detached
    re-protect) holds it, so an action retried after its process group was
    killed waits for, or follows, the one still running.  The kernel drops
    the lock when its holder dies, so a killed holder never leaves it held.

    ``with JournalLock(domain, timeout=30): ...``; :raises JournalError:
    still held by another process after ``timeout`` seconds (None: wait).
    """

    def __init__(self, domain, base=None, timeout=None, poll=0.05):
        self.path = journal_path(domain, base)[:-len(".json")] + ".lock"
        self.timeout = timeout
        self.poll = poll
        self.fd = None

    def acquire(self):
        import fcntl
        import time
        d = os.path.dirname(self.path)
        try:
            if not os.path.isdir(d):
                os.makedirs(d, 0o700)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise JournalError("%s: cannot create: %s" % (d, exc))
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise JournalError("%s: cannot open: %s" % (self.path, exc))
        deadline = None if self.timeout is None else time.time() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (fcntl.LOCK_NB if deadline is not None else 0))
                break
            except (IOError, OSError) as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EINTR) or \
                        (deadline is not None and time.time() >= deadline):
                    os.close(fd)
                    raise JournalError("%s: still held by another process after %.0f s"
                                       % (self.path, self.timeout or 0))
                time.sleep(self.poll)
        self.fd = fd
        return self

    def release(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()


def note(rec, now, event, *detail):
    """Append ``[now, event, detail...]`` to the history (in memory)."""
    rec.setdefault("history", []).append([now, event] + list(detail))
