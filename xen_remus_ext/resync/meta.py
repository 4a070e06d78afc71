"""Generation identifiers of a disk copy (host-local metadata).

Each copy of a Remus disk carries, beside it on its own host, a small JSON
record: :class:`DiskMeta`.  The idea follows DRBD's data generation UUIDs;
the rules are ours and are written down in docs/protocol.md ("Generations"):

- ``current``: the generation of the data on this copy, 16 hex digits.  Two
  copies with the same ``current`` (and both consistent) hold the same data.
- ``bitmap``: set when this copy started taking writes its peer does not see
  (:func:`rotate`); it is the generation both shared at that moment, i.e. the
  ancestor from which the dirty bitmap/tracker counts.  None while in sync.
- ``history``: older generations of this copy, newest first (at most
  :data:`HISTORY`).
- ``consistent``: False from the first write of a resync into this copy
  until the data is fsync'd (then it takes the source's generation).
- ``role``: free text for status ("primary", "backup", "resync-target").

Storage: ``state_dir()/meta/<sha1 of realpath>.json`` (``state_dir()`` is
``$XEN_REMUS_STATE_DIR`` or /var/lib/xen-remus-ext), written atomically.

Public API: :class:`DiskMeta`, :func:`state_dir`, :func:`load`,
:func:`save`, :func:`ensure`, :func:`rotate`, :func:`mark_inconsistent`,
:func:`mark_synced`, :func:`clear_bitmap`, :func:`compare` and the
relation constants.
"""
from __future__ import absolute_import, division, print_function

import binascii
import collections
import hashlib
import json
import os

from xen_remus_ext.compat import atomic_write, integer_types, string_types, to_bytes, to_text
from xen_remus_ext.errors import JournalError, ValidationError
from xen_remus_ext.paths import DEFAULT_STATE_DIR, state_dir  # noqa: F401 (meta.state_dir is public)

HISTORY = 2

IDENTICAL = "identical"
TARGET_BEHIND = "target-behind"
TARGET_AHEAD = "target-ahead"
SPLIT_BRAIN = "split-brain"
UNRELATED = "unrelated"
TARGET_NEW = "target-new"
#: relations a resync may proceed on without --discard-target
SAFE = (IDENTICAL, TARGET_BEHIND, TARGET_NEW)


def new_generation():
    return to_text(binascii.hexlify(os.urandom(8)))


def _check_gen(name, value, optional):
    if value is None and optional:
        return
    if not isinstance(value, string_types) or len(value) != 16:
        raise ValidationError("disk meta %s: expected 16 hex digits, got %r" % (name, value))
    try:
        int(value, 16)
    except ValueError:
        raise ValidationError("disk meta %s: expected 16 hex digits, got %r" % (name, value))


class DiskMeta(collections.namedtuple("DiskMeta", "disk size consistent current bitmap history role")):
    """Metadata of one disk copy (see the module docstring)."""

    __slots__ = ()

    def __new__(cls, disk, size, consistent=True, current=None, bitmap=None, history=(), role=None):
        if current is None:
            current = new_generation()
        _check_gen("current", current, False)
        _check_gen("bitmap", bitmap, True)
        history = tuple(history)
        for h in history:
            _check_gen("history", h, False)
        if not isinstance(size, integer_types) or size < 0:
            raise ValidationError("disk meta size: expected bytes >= 0, got %r" % (size,))
        return super(DiskMeta, cls).__new__(cls, disk, size, bool(consistent), current, bitmap,
                                            history[:HISTORY], role)

    def to_dict(self):
        return {"disk": self.disk, "size": self.size, "consistent": self.consistent,
                "current": self.current, "bitmap": self.bitmap, "history": list(self.history),
                "role": self.role}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(d["disk"], int(d["size"]), d["consistent"], d["current"], d.get("bitmap"),
                       d.get("history") or (), d.get("role"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValidationError("disk meta: expected disk, size, consistent, current; got %r (%s)" % (d, exc))

    def lineage(self):
        """Every generation this copy has held or descends from."""
        out = [self.current]
        if self.bitmap:
            out.append(self.bitmap)
        out.extend(self.history)
        return out


def meta_path(disk):
    real = os.path.realpath(disk)
    key = hashlib.sha1(to_bytes(real)).hexdigest()[:20]
    return os.path.join(state_dir(), "meta", key + ".json")


def load(disk):
    """:returns: the :class:`DiskMeta` of ``disk``, or None when it has none.

    :raises JournalError: the record exists but cannot be read.
    """
    path = meta_path(disk)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except (IOError, OSError) as exc:
        if getattr(exc, "errno", None) == 2:
            return None
        raise JournalError("disk meta %s: cannot read %s: %s" % (disk, path, exc))
    try:
        return DiskMeta.from_dict(json.loads(to_text(raw)))
    except ValueError as exc:
        raise JournalError("disk meta %s: %s is not valid metadata: %s" % (disk, path, exc))


def save(m):
    """Write ``m`` atomically (temp file, fsync, rename).  :returns: ``m``."""
    path = meta_path(m.disk)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o700)
    atomic_write(path, to_bytes(json.dumps(m.to_dict(), sort_keys=True) + "\n"))
    return m


def ensure(disk, size, role=None):
    """:returns: the copy's metadata, creating a fresh consistent generation
    when it has none (a disk first seen is taken as whole and authoritative
    for itself)."""
    m = load(disk)
    if m is None:
        m = save(DiskMeta(os.path.realpath(disk), size, True, role=role))
    return m


def _size_of(disk):
    try:
        fd = os.open(disk, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return os.lseek(fd, 0, os.SEEK_END)
    finally:
        os.close(fd)


def rotate(disk, role=None):
    """This copy starts taking writes its peer does not see (failover, or
    replication broke): a new ``current``; the old one becomes ``bitmap``
    unless a bitmap generation is already held (then it goes to history)."""
    m = load(disk) or DiskMeta(os.path.realpath(disk), _size_of(disk), True)
    if m.bitmap is None:
        bitmap, history = m.current, m.history
    else:
        bitmap, history = m.bitmap, (m.current,) + m.history
    return save(m._replace(current=new_generation(), bitmap=bitmap, history=history[:HISTORY],
                           role=role if role is not None else m.role))


def mark_inconsistent(disk, size=None, role="resync-target"):
    """Record that ``disk`` is about to be written by a resync."""
    m = load(disk)
    if m is None:
        m = DiskMeta(os.path.realpath(disk), size if size is not None else _size_of(disk), False)
    return save(m._replace(consistent=False, role=role))


def mark_synced(disk, source_meta, role="backup"):
    """``disk`` now holds exactly the data of ``source_meta``'s generation,
    fsync'd: take that generation and its ancestry; clear our bitmap."""
    if isinstance(source_meta, dict):
        source_meta = DiskMeta.from_dict(source_meta)
    m = load(disk)
    size = m.size if m is not None else source_meta.size
    hist = [h for h in ((source_meta.bitmap,) if source_meta.bitmap else ()) + source_meta.history]
    return save(DiskMeta(os.path.realpath(disk), size, True, source_meta.current, None,
                         tuple(hist)[:HISTORY], role))


def clear_bitmap(disk):
    """Protection is established with both copies in sync: the bitmap
    generation moves to history (a disk without metadata gets a fresh one)."""
    m = load(disk)
    if m is None:
        return ensure(disk, _size_of(disk))
    if m.bitmap is None:
        return m
    return save(m._replace(bitmap=None, history=((m.bitmap,) + m.history)[:HISTORY]))


def compare(src, dst):
    """Relation of a resync target to its source.

    :param src: the source's :class:`DiskMeta` (or dict).
    :param dst: the target's, or None when it has no metadata.
    :returns: one of ``identical``, ``target-behind`` (safe), ``target-ahead``,
        ``split-brain``, ``unrelated``, ``target-new`` (safe, full/checksum).
    """
    if isinstance(src, dict):
        src = DiskMeta.from_dict(src)
    if isinstance(dst, dict):
        dst = DiskMeta.from_dict(dst)
    if dst is None:
        return TARGET_NEW
    if src.current == dst.current:
        return IDENTICAL if dst.consistent else TARGET_BEHIND
    if not dst.consistent:
        # an interrupted resync target holds no writes of its own
        return TARGET_BEHIND
    if dst.current in ((src.bitmap,) if src.bitmap else ()) + src.history:
        return TARGET_BEHIND
    if src.current in ((dst.bitmap,) if dst.bitmap else ()) + dst.history:
        return TARGET_AHEAD
    if set(src.lineage()[1:]) & set(dst.lineage()[1:]):
        return SPLIT_BRAIN
    return UNRELATED
