"""File-backed disks of a simulated host and the simulator's dirty tracker.

Every guest write goes through :meth:`DiskFile.write`, which is where the
sim's tracker sees it (the place blktap2's ``log`` driver sits on a real
host).  A tracker records 4 KiB blocks with the sequence number of their
last write, so ``clear()`` after a sync forgets only what was reported and
not a block rewritten since the report.
"""
from __future__ import absolute_import, division, print_function

import hashlib
import itertools
import os
import threading

from xen_remus_ext.errors import ToolstackError

TRACK_BLOCK = 4096


class DirtyMap(object):
    """Blocks written since the mark, with the sequence of their last write."""

    def __init__(self):
        self.blocks = {}
        self.reported = 0

    def note(self, offset, length, seq):
        first = offset // TRACK_BLOCK
        last = (offset + length - 1) // TRACK_BLOCK
        for b in range(first, last + 1):
            self.blocks[b] = seq

    def extents(self, size, seq):
        """Sorted, merged ``(offset, length)`` pairs clipped to ``size``;
        remembers ``seq`` as the point :meth:`clear` may forget up to."""
        self.reported = seq
        out = []
        for b in sorted(self.blocks):
            off = b * TRACK_BLOCK
            if off >= size:
                continue
            length = min(TRACK_BLOCK, size - off)
            if out and out[-1][0] + out[-1][1] == off:
                out[-1] = (out[-1][0], out[-1][1] + length)
            else:
                out.append((off, length))
        return out

    def clear(self):
        reported = self.reported
        self.blocks = dict((b, s) for b, s in self.blocks.items() if s > reported)


class DiskFile(object):
    """One image file on a host, shared by whoever opens it there."""

    def __init__(self, path):
        self.path = path
        if not os.path.isfile(path):
            raise ToolstackError("disk %s: expected an existing image file, got none" % path)
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.lock = threading.Lock()
        self.seq = itertools.count(1)
        self.trackers = {}

    def write(self, offset, data):
        with self.lock:
            if offset + len(data) > self.size:
                raise ToolstackError("disk %s: write [%d, %d) past the end (%d bytes)"
                                     % (self.path, offset, offset + len(data), self.size))
            view = memoryview(data)
            pos = offset
            while view:
                os.lseek(self.fd, pos, os.SEEK_SET)
                n = os.write(self.fd, view)
                view = view[n:]
                pos += n
            seq = next(self.seq)
            for dmap in self.trackers.values():
                dmap.note(offset, len(data), seq)

    def write_runs(self, runs):
        """Write ``[(offset, data)]`` in the order given."""
        for off, data in runs:
            self.write(off, data)

    def read(self, offset, length):
        with self.lock:
            os.lseek(self.fd, offset, os.SEEK_SET)
            return os.read(self.fd, length)

    def tracker_mark(self, tid):
        with self.lock:
            self.trackers[tid] = DirtyMap()

    def tracker_extents(self, tid):
        with self.lock:
            dmap = self._dmap(tid)
            return dmap.extents(self.size, next(self.seq))

    def tracker_clear(self, tid):
        with self.lock:
            self._dmap(tid).clear()

    def tracker_drop(self, tid):
        with self.lock:
            self.trackers.pop(tid, None)

    def _dmap(self, tid):
        try:
            return self.trackers[tid]
        except KeyError:
            raise ToolstackError("tracker %s on %s: expected a marked tracker, got none"
                                 " (host restarted?)" % (tid, self.path))

    def close(self):
        with self.lock:
            if self.fd is not None:
                os.close(self.fd)
                self.fd = None


def file_digest(path, chunk=1 << 20):
    """SHA-256 hex digest of a whole file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def create_image(path, size):
    """A sparse, zeroed image of ``size`` bytes (parent dirs made)."""
    d = os.path.dirname(path)
    if d and not os.path.isdir(d):
        os.makedirs(d)
    with open(path, "wb") as f:
        f.truncate(size)
