"""Dirty extents of an image file by reflink snapshot + FIEMAP comparison.

For file-backed disks on XFS (``mkfs.xfs -m reflink=1``) or Btrfs, where
the kernel can clone a file by sharing its extents (``FICLONE`` ioctl,
``cp --reflink``).  After a clone, any write to either file goes to newly
allocated blocks (copy-on-write), so comparing the two files' extent maps
(``FS_IOC_FIEMAP``, with ``FIEMAP_FLAG_SYNC`` so dirty page cache is written
out first) shows every byte range written since the clone: where the image
and the snapshot map a logical offset to different physical blocks (or one
has a hole), that range was written.  Granularity is the filesystem block.

* :meth:`FiemapTracker.mark` clones the image to ``.<name>.remus-ext-mark``
  (same directory: a reflink never crosses filesystems).
* :meth:`FiemapTracker.dirty_extents` clones the image again to
  ``.<name>.remus-ext-scan`` (a fixed point in time) and compares that with
  the mark; writes after the scan stay visible against the scan.
* :meth:`FiemapTracker.clear` makes the scan the new mark (a rename), so
  nothing written between the scan and the clear is forgotten.

The clones cost no space until the image diverges from them; they hold the
old blocks meanwhile.  A grown image reports its new tail as dirty; a
shrunk one reports nothing for the cut part (the resync handles sizes).
Not trustworthy when there is no mark, or the image is no longer the file
that was marked (another inode: replaced by a copy or a restore).

ioctl numbers and layouts (linux/fiemap.h, linux/fs.h): ``FS_IOC_FIEMAP`` =
``_IOWR('f', 11, struct fiemap)`` = 0xC020660B, header 32 bytes (u64 start,
u64 length, u32 flags, u32 mapped, u32 count, u32 reserved), extents 56
bytes (u64 logical, u64 physical, u64 length, 2 x u64 reserved, u32 flags,
3 x u32 reserved); ``FICLONE`` = ``_IOW(0x94, 9, int)`` = 0x40049409.
"""
from __future__ import absolute_import, division, print_function

import array
import bisect
import errno
import fcntl
import json
import logging
import os
import struct

from xen_remus_ext.compat import atomic_write, to_bytes, to_text
from xen_remus_ext.errors import ResyncError
from xen_remus_ext.model import Extent
from xen_remus_ext.ports import Tracker
from xen_remus_ext.trackers import merge_extents

LOG = logging.getLogger(__name__)

FS_IOC_FIEMAP = 0xC020660B
FICLONE = 0x40049409
FIEMAP_FLAG_SYNC = 0x1
FIEMAP_MAX_OFFSET = 0xFFFFFFFFFFFFFFFF
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNKNOWN = 0x2
FIEMAP_EXTENT_DELALLOC = 0x4
FIEMAP_EXTENT_ENCODED = 0x8
FIEMAP_EXTENT_NOT_ALIGNED = 0x100
FIEMAP_EXTENT_DATA_INLINE = 0x200
FIEMAP_EXTENT_DATA_TAIL = 0x400
FIEMAP_EXTENT_SHARED = 0x2000
#: physical address meaningless: always counts as changed
UNSTABLE_FLAGS = (FIEMAP_EXTENT_UNKNOWN | FIEMAP_EXTENT_DELALLOC | FIEMAP_EXTENT_DATA_INLINE |
                  FIEMAP_EXTENT_DATA_TAIL | FIEMAP_EXTENT_NOT_ALIGNED)

_HEAD = struct.Struct("=QQIIII")
_EXT = struct.Struct("=QQQQQIIII")
_BATCH = 256


def fiemap(fd, sync=True):
    """:returns: the extent list of open file ``fd`` as ``(logical, physical, length, flags)``."""
    out = []
    start = 0
    while True:
        # array, not bytearray: Python 2's ioctl only mutates old-style buffers
        buf = array.array("B", bytes(bytearray(_HEAD.size + _BATCH * _EXT.size)))
        _HEAD.pack_into(buf, 0, start, FIEMAP_MAX_OFFSET - start, FIEMAP_FLAG_SYNC if sync else 0, 0, _BATCH, 0)
        fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        mapped = _HEAD.unpack_from(buf, 0)[3]
        if mapped == 0:
            return out
        last = False
        for i in range(mapped):
            logical, physical, length, _r1, _r2, flags, _a, _b, _c = _EXT.unpack_from(buf, _HEAD.size + i * _EXT.size)
            out.append((logical, physical, length, flags))
            last = bool(flags & FIEMAP_EXTENT_LAST)
        if last or mapped < _BATCH:
            return out
        start = out[-1][0] + out[-1][2]


def reflink(src, dst):
    """Clone ``src`` to ``dst`` (created or replaced) sharing every extent.

    :raises ResyncError: the filesystem cannot reflink (not XFS with
        reflink=1 nor Btrfs, or another filesystem)
    """
    tmp = dst + ".tmp"
    sfd = os.open(src, os.O_RDONLY)
    try:
        dfd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            fcntl.ioctl(dfd, FICLONE, sfd)
        except (IOError, OSError) as exc:
            os.close(dfd)
            dfd = None
            os.unlink(tmp)
            if exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                raise ResyncError("fiemap tracker %s: expected a filesystem that can reflink (XFS with "
                                  "reflink=1, Btrfs), got: %s" % (src, os.strerror(exc.errno)))
            raise ResyncError("fiemap tracker %s: reflink to %s failed: %s" % (src, dst, exc))
        finally:
            if dfd is not None:
                os.fsync(dfd)
                os.close(dfd)
    finally:
        os.close(sfd)
    os.rename(tmp, dst)


def reflink_probe(image):
    """Whether :class:`FiemapTracker` can track ``image``: clones a one-byte
    scratch file beside it (the same filesystem) and removes both.

    :returns: None when it can, else why not (a sentence)
    """
    d = os.path.dirname(os.path.abspath(image))
    if not os.path.exists(image):
        return "%s: no such image file" % image
    probe = os.path.join(d, ".remus-ext-probe.%d" % os.getpid())
    try:
        with open(probe, "wb") as f:
            f.write(b"\0")
        reflink(probe, probe + ".clone")
    except (IOError, OSError) as exc:
        return "%s: cannot write a scratch file there: %s" % (d, exc)
    except ResyncError:
        return "%s cannot reflink (XFS with reflink=1 or Btrfs can)" % d
    finally:
        for path in (probe, probe + ".clone"):
            if os.path.exists(path):
                os.unlink(path)
    return None


def _segments(extents):
    """-> sorted (start, end, physical or None for "unstable") lists."""
    segs = []
    for logical, physical, length, flags in sorted(extents):
        segs.append((logical, logical + length, None if flags & UNSTABLE_FLAGS else physical))
    return segs


def _where(segs, starts, x):
    """Physical address of logical ``x``: ``"hole"``, ``None`` (unstable) or an int."""
    i = bisect.bisect_right(starts, x) - 1
    if i < 0 or x >= segs[i][1]:
        return "hole"
    start, _end, phys = segs[i]
    return None if phys is None else phys + (x - start)


def plan_dirty_extents(new_map, old_map, new_size, old_size):
    """Byte ranges where two extent maps differ (pure; see the module docstring).

    :param new_map, old_map: ``(logical, physical, length, flags)`` lists
    :returns: sorted, merged list of :class:`model.Extent`
    """
    new_s, old_s = _segments(new_map), _segments(old_map)
    new_starts, old_starts = [s[0] for s in new_s], [s[0] for s in old_s]
    cuts = set([0, new_size])
    for s in new_s + old_s:
        cuts.add(s[0])
        cuts.add(s[1])
    cuts = sorted(c for c in cuts if c <= new_size)
    dirty = []
    for a, b in zip(cuts, cuts[1:]):
        pn, po = _where(new_s, new_starts, a), _where(old_s, old_starts, a)
        if pn is None or po is None or pn != po:
            if not (pn == "hole" and po == "hole"):
                dirty.append(Extent(a, b - a))
    if new_size > old_size:
        dirty.append(Extent(old_size, new_size - old_size))
    return merge_extents(dirty)


class FiemapTracker(Tracker):
    """:class:`ports.Tracker` for an image file on a reflink-capable filesystem.

    :param image: path of the image file
    """

    name = "fiemap"

    def __init__(self, image):
        self.image = os.path.abspath(image)
        d, base = os.path.split(self.image)
        self.mark_path = os.path.join(d, ".%s.remus-ext-mark" % base)
        self.scan_path = os.path.join(d, ".%s.remus-ext-scan" % base)
        self.meta_path = self.mark_path + ".json"

    def _identity(self):
        st = os.stat(self.image)
        return [st.st_dev, st.st_ino]

    def _meta(self):
        try:
            with open(self.meta_path, "rb") as f:
                return json.loads(to_text(f.read()))
        except (IOError, OSError, ValueError):
            return None

    def mark(self):
        reflink(self.image, self.mark_path)
        atomic_write(self.meta_path, to_bytes(json.dumps({"identity": self._identity()})), 0o600)
        if os.path.exists(self.scan_path):
            os.unlink(self.scan_path)

    def _map(self, path):
        fd = os.open(path, os.O_RDONLY)
        try:
            return fiemap(fd), os.fstat(fd).st_size
        except (IOError, OSError) as exc:
            raise ResyncError("fiemap tracker %s: FIEMAP failed: %s" % (path, exc))
        finally:
            os.close(fd)

    def dirty_extents(self):
        if self._meta() is None or not os.path.exists(self.mark_path):
            raise ResyncError("fiemap tracker %s: dirty_extents() before mark()" % (self.image,))
        reflink(self.image, self.scan_path)
        new_map, new_size = self._map(self.scan_path)
        old_map, old_size = self._map(self.mark_path)
        return plan_dirty_extents(new_map, old_map, new_size, old_size)

    def clear(self):
        if os.path.exists(self.scan_path):
            os.rename(self.scan_path, self.mark_path)

    def trustworthy(self):
        meta = self._meta()
        if meta is None or not os.path.exists(self.mark_path):
            return False
        try:
            return meta.get("identity") == self._identity()
        except OSError:
            return False

    def drop(self):
        """Remove the clones and the metadata (they pin the old blocks)."""
        for path in (self.scan_path, self.mark_path, self.meta_path):
            if os.path.exists(path):
                os.unlink(path)
