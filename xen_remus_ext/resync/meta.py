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

Storage: ``state_dir()/meta/<sha1 of identity>.json`` (``state_dir()`` is
``$XEN_REMUS_STATE_DIR`` or /var/lib/xen-remus-ext), written atomically.
The identity (:func:`identity`) is stable across reboots: an image file's
real path, and for a device-mapper device (an LVM volume) its
``/dev/mapper/NAME``, never the ``/dev/dm-N`` the kernel numbered it with
this boot.  A record stored under the older realpath key is moved to the
identity key when first loaded (for a dm device only if its size matches).

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
import logging
import os
import re
import stat

from xen_remus_ext.compat import atomic_write, integer_types, string_types, to_bytes, to_text
from xen_remus_ext.errors import JournalError, ValidationError
from xen_remus_ext.paths import DEFAULT_STATE_DIR, state_dir  # noqa: F401 (meta.state_dir is public)

LOG = logging.getLogger(__name__)

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


class DiskMeta(collections.namedtuple("DiskMeta", "disk size consistent current bitmap history role stamp")):
    """Metadata of one disk copy (see the module docstring).

    ``stamp``: for an image file, its modification time (:func:`file_stamp`)
    when a resync last read it as the source or finished writing it as the
    target; None otherwise.  It only serves :func:`wrong_way`.
    """

    __slots__ = ()

    def __new__(cls, disk, size, consistent=True, current=None, bitmap=None, history=(), role=None, stamp=None):
        if current is None:
            current = new_generation()
        _check_gen("current", current, False)
        _check_gen("bitmap", bitmap, True)
        history = tuple(history)
        for h in history:
            _check_gen("history", h, False)
        if not isinstance(size, integer_types) or size < 0:
            raise ValidationError("disk meta size: expected bytes >= 0, got %r" % (size,))
        if stamp is not None and (not isinstance(stamp, integer_types) or isinstance(stamp, bool)):
            raise ValidationError("disk meta stamp: expected an integer or null, got %r" % (stamp,))
        return super(DiskMeta, cls).__new__(cls, disk, size, bool(consistent), current, bitmap,
                                            history[:HISTORY], role, stamp)

    def to_dict(self):
        return {"disk": self.disk, "size": self.size, "consistent": self.consistent,
                "current": self.current, "bitmap": self.bitmap, "history": list(self.history),
                "role": self.role, "stamp": self.stamp}

    @classmethod
    def from_dict(cls, d):
        try:
            return cls(d["disk"], int(d["size"]), d["consistent"], d["current"], d.get("bitmap"),
                       d.get("history") or (), d.get("role"), d.get("stamp"))
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ValidationError("disk meta: expected disk, size, consistent, current; got %r (%s)" % (d, exc))

    def lineage(self):
        """Every generation this copy has held or descends from."""
        out = [self.current]
        if self.bitmap:
            out.append(self.bitmap)
        out.extend(self.history)
        return out


#: where the kernel describes block devices (tests point it elsewhere)
SYS_BLOCK = "/sys/block"
_DM = re.compile(r"^dm-[0-9]+$")


def _dm_name(real):
    """The device-mapper name of ``/dev/dm-N`` (``VG-LV`` for LVM), or None."""
    try:
        with open(os.path.join(SYS_BLOCK, os.path.basename(real), "dm", "name"), "rb") as f:
            name = to_text(f.read()).strip()
    except (IOError, OSError):
        return None
    return name or None


def _lvm_mapper_name(path):
    """``VG-LV`` for a ``/dev/VG/LV`` path (hyphens in either part doubled,
    as device-mapper names LVM volumes), else None."""
    parts = os.path.normpath(path).split(os.sep)
    if len(parts) < 2 or parts[-2] in ("mapper", "dev") or not parts[-2] or not parts[-1]:
        return None
    return "%s-%s" % (parts[-2].replace("-", "--"), parts[-1].replace("-", "--"))


def identity(disk):
    """The stable name metadata is keyed by: the real path of an image file
    (so symlinks and ``./`` find one record), ``/dev/mapper/NAME`` for a
    device-mapper device, whatever path names it (``/dev/VG/LV``,
    ``/dev/mapper/VG-LV``, ``/dev/dm-N``)."""
    path = os.path.abspath(disk)
    real = os.path.realpath(path)
    if not _DM.match(os.path.basename(real)):
        return real
    mapper = os.path.join(os.path.dirname(real), "mapper")
    name = _dm_name(real)
    if name is None:
        if os.path.basename(os.path.dirname(path)) == "mapper":
            return path
        name = _lvm_mapper_name(path)
        if name is None:
            return real
    return os.path.join(mapper, name)


def _key_path(name):
    key = hashlib.sha1(to_bytes(name)).hexdigest()[:20]
    return os.path.join(state_dir(), "meta", key + ".json")


def meta_path(disk):
    """The record file of ``disk`` (keyed by :func:`identity`)."""
    return _key_path(identity(disk))


def _migrate(disk, path):
    """Move a record stored under the older realpath key to ``path``."""
    old = _key_path(os.path.realpath(disk))
    if old == path or not os.path.exists(old):
        return
    try:
        with open(old, "rb") as f:
            rec = json.loads(to_text(f.read()))
    except (IOError, OSError, ValueError, RuntimeError) as exc:
        LOG.warning("disk meta %s: older record %s unreadable, not migrated: %s", disk, old, exc)
        return
    if _DM.match(os.path.basename(os.path.realpath(disk))) and rec.get("size") != _size_of(disk):
        # dm-N numbers change across reboots: a record of another size is another device's
        LOG.warning("disk meta %s: older record %s is of %s bytes, the device has %d: not migrated",
                    disk, old, rec.get("size"), _size_of(disk))
        return
    rec["disk"] = identity(disk)
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o700)
    atomic_write(path, to_bytes(json.dumps(rec, sort_keys=True) + "\n"))
    os.unlink(old)
    LOG.info("disk meta %s: record moved from %s to %s (keyed by %s)", disk, old, path, rec["disk"])


def load(disk):
    """:returns: the :class:`DiskMeta` of ``disk``, or None when it has none.

    :raises JournalError: the record exists but cannot be read.
    """
    path = meta_path(disk)
    if not os.path.exists(path):
        _migrate(disk, path)
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
    except RuntimeError:      # RecursionError on 3: nested thousands deep
        raise JournalError("disk meta %s: %s is not valid metadata: nested too deep to decode" % (disk, path))


def save(m):
    """Write ``m`` atomically (temp file, fsync, rename).  :returns: ``m``."""
    path = meta_path(m.disk)
    d = os.path.dirname(path)
    try:
        if not os.path.isdir(d):
            os.makedirs(d, 0o700)
        atomic_write(path, to_bytes(json.dumps(m.to_dict(), sort_keys=True) + "\n"))
    except (IOError, OSError) as exc:
        raise JournalError("disk meta %s: cannot write %s: %s" % (m.disk, path, getattr(exc, "strerror", None) or exc))
    return m


def ensure(disk, size, role=None):
    """:returns: the copy's metadata, creating a fresh consistent generation
    when it has none (a disk first seen is taken as whole and authoritative
    for itself)."""
    m = load(disk)
    if m is None:
        m = save(DiskMeta(identity(disk), size, True, role=role))
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
    m = load(disk) or DiskMeta(identity(disk), _size_of(disk), True)
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
        m = DiskMeta(identity(disk), size if size is not None else _size_of(disk), False)
    return save(m._replace(consistent=False, role=role))


def mark_synced(disk, source_meta, role="backup", stamp=None):
    """``disk`` now holds exactly the data of ``source_meta``'s generation,
    fsync'd: take that generation and its ancestry; clear our bitmap.
    ``stamp``: :func:`file_stamp` of ``disk`` now."""
    if isinstance(source_meta, dict):
        source_meta = DiskMeta.from_dict(source_meta)
    m = load(disk)
    size = m.size if m is not None else source_meta.size
    hist = [h for h in ((source_meta.bitmap,) if source_meta.bitmap else ()) + source_meta.history]
    return save(DiskMeta(identity(disk), size, True, source_meta.current, None,
                         tuple(hist)[:HISTORY], role, stamp))


def file_stamp(path):
    """The modification time of an image file in microseconds, or None for
    anything else (a block device's node does not change when its blocks do).
    Both Pythons round the same float, so their stamps compare equal."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return int(round(st.st_mtime * 1e6)) if stat.S_ISREG(st.st_mode) else None


def set_stamp(disk, stamp, current):
    """Record ``stamp`` (:func:`file_stamp`) in ``disk``'s record, if it
    still holds generation ``current`` (a rotation since wins: the record is
    left as it is)."""
    m = load(disk)
    if m is not None and stamp is not None and m.stamp != stamp and m.current == current:
        save(m._replace(stamp=stamp))


def wrong_way(src, src_stamp, dst, dst_stamp):
    """Why a resync from ``src`` into ``dst`` (:class:`DiskMeta`, same
    generation) looks like the wrong direction, or None.

    Copies outside Remus keep their generation when written, so two image
    files once synced look identical whichever was written since.  Their
    stamps still tell: when the target's file changed since its last resync
    while the source's did not, the target holds the newer writes.  (Both
    changed, or no stamps: nothing can be told; a block device has none.)

    :param src_stamp: :func:`file_stamp` of the source now;
    :param dst_stamp: the target's now (from the receiver).
    """
    if dst is None or compare(src, dst) != IDENTICAL:
        return None
    if None in (src.stamp, dst.stamp, src_stamp, dst_stamp):
        return None
    if src_stamp == src.stamp and dst_stamp != dst.stamp:
        return ("the target's file was modified since its last resync and the source's was not, though both "
                "hold generation %s: the target may hold the newer writes (copies outside Remus keep their "
                "generation when written)" % src.current)
    return None


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


def invalidate(disk):
    """DRBD's ``invalidate``: this copy is the one to be overwritten.  It is
    marked inconsistent under a new generation: the next resync into it is
    allowed without ``--discard-target`` and compares every block (never a
    tracked delta); it is refused as a resync source until then.

    :returns: the new record.
    """
    m = load(disk)
    if m is None:
        return save(DiskMeta(identity(disk), _size_of(disk), False, role="invalidated"))
    return save(m._replace(consistent=False, current=new_generation(),
                           history=((m.current,) + m.history)[:HISTORY], bitmap=None, role="invalidated"))


def forget(disk):
    """Delete the copy's record.  :returns: the record deleted, or None.

    The copy then counts as new: into it, a resync compares every block and
    checks no generation; from it, the next resync creates a fresh
    generation that no peer shares (``unrelated``: the peer must be named
    the loser with ``--discard-target``)."""
    m = load(disk)
    path = meta_path(disk)
    try:
        os.unlink(path)
    except OSError as exc:
        if getattr(exc, "errno", None) != 2:
            raise JournalError("disk meta %s: cannot delete %s: %s" % (disk, path, exc))
    return m


def tracked_refusal(src, dst):
    """Why tracked mode (sending only a list of dirty extents) cannot bring
    ``dst`` to ``src``, or None when it can.

    A dirty list describes the writes since one generation: it is enough
    only when the target is consistent and holds the source's own
    generation or its bitmap ancestor (the generation the tracking started
    from).  A new, unrelated or half-written target needs full or checksum.
    """
    if dst is None:
        return "the target has no generation (a new copy)"
    if not dst.consistent:
        return "the target is inconsistent (an interrupted resync)"
    if dst.current != src.current and (src.bitmap is None or dst.current != src.bitmap):
        return ("the target's generation %s is neither the source's (%s) nor its bitmap ancestor (%s)"
                % (dst.current, src.current, src.bitmap))
    return None


def tracked_allowed(src, dst):
    """True when :func:`tracked_refusal` has no objection."""
    return tracked_refusal(src, dst) is None
