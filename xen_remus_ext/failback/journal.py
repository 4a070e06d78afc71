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
    options {...} (the journaled FailbackOptions), disks [{vdev, src, dest,
    path, size, tracker, precopy [{mode, bytes_sent, ...}], final {...}}],
    delta {sent, by, at, seconds} (:class:`Delta`), timing {step: [start, end]},
    history [[t, event, ...]], and as the run goes updated, migrated_at,
    paused_at, running_at, downtime, downtime_max, was_paused, reverse, checks

:func:`load` checks every field any reader uses (:func:`check_record`: the
type of each, the steps, the options as :class:`FailbackOptions` checks
them): a journal damaged or edited by hand, its sum made to match, is
refused with an error naming the file and the field (``disks[0].final.
bytes_sent``), so no reader meets a value it cannot use.  Fields it does
not know are kept.  The record stays a plain dict in memory (the runner
fills it step by step); only ``delta`` is a value (:class:`Delta`).

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
from xen_remus_ext.errors import FailbackError, JournalError, ValidationError
from xen_remus_ext.failback import machine
from xen_remus_ext.failback import options as options_mod
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
_NUMBER = integer_types + (float,)
_OPT_NUMBER = _NUMBER + (type(None),)
#: the record's fields and the JSON types each may hold (absent is checked
#: apart: :data:`_REQUIRED`); every field the runner, the xend hook, status
#: and the Pacemaker agent read is here, so a record they get is one they can read
_FIELD_TYPES = {"domain": _TEXT, "host": _TEXT, "local_host": _OPT_TEXT, "mode": _TEXT, "toolstack": _OPT_TEXT,
                "state": _TEXT, "step": _OPT_TEXT, "attempt": integer_types, "error": _OPT_TEXT,
                "options": (dict,), "disks": (list,), "delta": (dict,), "timing": (dict,), "history": (list,),
                "updated": _OPT_NUMBER, "migrated_at": _OPT_NUMBER, "paused_at": _OPT_NUMBER,
                "running_at": _OPT_NUMBER, "downtime": _OPT_NUMBER, "downtime_max": _OPT_NUMBER,
                "was_paused": (bool,), "reverse": (list,), "checks": (list,)}
_REQUIRED = ("domain", "host", "mode", "state", "disks", "delta", "history")
_DISK_TYPES = {"vdev": _TEXT, "src": _TEXT, "dest": _TEXT, "path": _OPT_TEXT, "precopy": (list,),
               "final": (dict, type(None)), "size": integer_types + (type(None),), "tracker": _OPT_TEXT,
               "tracker_why": _OPT_TEXT, "estimate": _NUMBER, "prepared": _NUMBER,
               "create": (bool,), "created": (bool,)}
_DISK_REQUIRED = ("vdev", "src", "dest")
#: a disk pass's result (``precopy[i]``, ``final``): the fields read back
_PASS_TYPES = {"mode": _OPT_TEXT, "bytes_sent": _OPT_NUMBER, "bytes_read": _OPT_NUMBER, "seconds": _OPT_NUMBER}


def _tname(t):
    if t is type(None):
        return "null"
    if t in (dict, list, bool):
        return {dict: "an object", list: "a list", bool: "a boolean"}[t]
    return "a number" if t in (float,) + integer_types else "text"


def _shown(v):
    shown = repr(v)
    return shown if len(shown) <= 60 else shown[:57] + "..."


def _check_types(obj, types, path, prefix):
    """:raises JournalError: a field present with a JSON type it may not hold."""
    for key, allowed in sorted(types.items()):
        v = obj.get(key)
        if key in obj and (not isinstance(v, allowed) or (isinstance(v, bool) and bool not in allowed)):
            raise JournalError("%s: %s%s: expected %s, got %s %s"
                               % (path, prefix, key, " or ".join(sorted(set(_tname(t) for t in allowed))),
                                  _tname(type(v)), _shown(v)))


def _is_number(v):
    return isinstance(v, _NUMBER) and not isinstance(v, bool)


def _check_disk(disk, path, prefix):
    if not isinstance(disk, dict):
        raise JournalError("%s: %s: expected an object, got %s" % (path, prefix[:-1], _tname(type(disk))))
    _check_types(disk, _DISK_TYPES, path, prefix)
    for key in _DISK_REQUIRED:
        if key not in disk:
            raise JournalError("%s: %s%s: missing" % (path, prefix, key))
    passes = [("precopy[%d]" % j, p) for j, p in enumerate(disk.get("precopy") or ())]
    if disk.get("final") is not None:
        passes.append(("final", disk["final"]))
    for name, result in passes:
        if not isinstance(result, dict):
            raise JournalError("%s: %s%s: expected an object, got %s %s"
                               % (path, prefix, name, _tname(type(result)), _shown(result)))
        _check_types(result, _PASS_TYPES, path, "%s%s." % (prefix, name))


def _check_runner_fields(rec, path):
    """The fields the runner adds as it goes: steps, timing, history, options."""
    steps = machine.step_names()
    if rec.get("step") is not None and rec["step"] not in steps:
        raise JournalError("%s: step: expected null or one of %s, got %s"
                           % (path, ", ".join(steps), _shown(rec["step"])))
    if rec.get("attempt", 0) < 0:
        raise JournalError("%s: attempt: expected a count >= 0, got %r" % (path, rec["attempt"]))
    for step, span in sorted(rec.get("timing", {}).items()):
        if step not in steps:
            raise JournalError("%s: timing.%s: expected a step (%s)" % (path, step, ", ".join(steps)))
        if not isinstance(span, list) or len(span) != 2 or \
                not all(t is None or _is_number(t) for t in span):
            raise JournalError("%s: timing.%s: expected [start, end] (numbers or null), got %s"
                               % (path, step, _shown(span)))
    for i, event in enumerate(rec["history"]):
        if not isinstance(event, list):
            raise JournalError("%s: history[%d]: expected a list, got %s" % (path, i, _tname(type(event))))
        if len(event) < 2 or not (event[0] is None or _is_number(event[0])) or \
                not isinstance(event[1], string_types):
            raise JournalError("%s: history[%d]: expected [time, event, ...], got %s" % (path, i, _shown(event)))
    options = rec.get("options") or {}
    unknown = sorted(set(options) - set(options_mod.JOURNALED))
    if unknown:
        raise JournalError("%s: options: expected only %s, got %s"
                           % (path, ", ".join(options_mod.JOURNALED), ", ".join(unknown)))
    try:
        options_mod.FailbackOptions.check_journaled(options)
    except ValidationError as exc:
        raise JournalError("%s: options: %s" % (path, exc))


def check_record(rec, path="<journal>"):
    """:raises JournalError: naming ``path`` and the field: the record lacks a
    field, has the wrong version, or a field holds what no run writes there."""
    if not isinstance(rec, dict):
        raise JournalError("%s: expected a JSON object, got %s" % (path, type(rec).__name__))
    if rec.get("version") != VERSION:
        raise JournalError("%s: expected journal version %d, got %r" % (path, VERSION, rec.get("version")))
    for key in _REQUIRED:
        if key not in rec:
            raise JournalError("%s: field %r missing" % (path, key))
    _check_types(rec, _FIELD_TYPES, path, "")
    for i, disk in enumerate(rec["disks"]):
        _check_disk(disk, path, "disks[%d]." % i)
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
    _check_runner_fields(rec, path)
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
