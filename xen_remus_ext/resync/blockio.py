"""Positioned I/O on disk images and block devices (adapter; has effects).

One :class:`BlockFile` per thread: Python 2.7 has no ``os.pread``, so reads
and writes seek on a descriptor owned by the thread that uses it, which is
race-free without a lock.  Writers of block devices open them with
``O_EXCL`` (Linux refuses it while the device is mounted, or claimed by
another exclusive opener such as a running tapdisk), and every writer takes
an ``flock`` so that two resyncs into one file cannot overlap.

Zero ranges become holes: ``fallocate(PUNCH_HOLE|KEEP_SIZE)`` on files,
``BLKZEROOUT`` on block devices, and written zeros where neither works.

Reads of a block device never trust its page cache: a guest's backend
(blkback, a tapdisk on an LV, the kernel's NBD client) writes the device with
bios that bypass dom0's cache of it, and that cache outlives our descriptors
while the backend keeps the device open.  A page cached by an earlier pass
would then be read again, stale, by the final pass and the copy marked
consistent with bytes the source no longer holds.  So each range of a block
device is dropped from the cache (``POSIX_FADV_DONTNEED``, which keeps dirty
pages) just before it is read or announced with ``will_need``.
"""
from __future__ import absolute_import, division, print_function

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct

from xen_remus_ext.errors import ResyncError, TargetBusyError

_HAS_PREAD = hasattr(os, "pread")
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02
_BLKZEROOUT = 0x127F  # _IO(0x12, 127)
_ZERO_PIECE = bytes(bytearray(1 << 20))
#: memoryview items are ints on Python 3 (1-byte strings on 2.7)
_MV_INT_ITEMS = isinstance(memoryview(b"\0")[0], int)

_POSIX_FADV_WILLNEED = 3
_POSIX_FADV_DONTNEED = 4
_SEEK_DATA = getattr(os, "SEEK_DATA", 3)   # Linux values; 2.7 lacks the names
_SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)

_libc = None
_libc_fadvise = None


def _fadvise():
    """libc's posix_fadvise for Python 2.7 (3 has os.posix_fadvise)."""
    global _libc_fadvise
    if _libc_fadvise is None:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            lib.posix_fadvise.argtypes = [ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_int]
            _libc_fadvise = lib.posix_fadvise
        except (OSError, AttributeError):
            _libc_fadvise = False
    return _libc_fadvise or None


def _advise(fd, offset, length, advice):
    """posix_fadvise on both Pythons; :returns: False where it cannot be asked."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, advice)  # novm
        return True
    fa = _fadvise()
    if fa is None:
        return False
    rc = fa(fd, offset, length, advice)
    if rc:
        raise OSError(rc, os.strerror(rc))
    return True


def _fallocate():
    global _libc
    if _libc is None:
        try:
            _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            _libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong]
        except (OSError, AttributeError):
            _libc = False
    return _libc.fallocate if _libc else None


def _err(path, what, exc):
    return ResyncError("%s: cannot %s: %s" % (path, what, getattr(exc, "strerror", None) or exc))


class BlockFile(object):
    """An open image file or block device.

    :param write: open read-write (the resync target).
    :param exclusive: with ``write``: O_EXCL for block devices plus an flock.
    :param shared: a shared flock (readers of a target that must not
        change under them, e.g. a verify): writers are then refused.
    """

    def __init__(self, path, write=False, exclusive=False, shared=False):
        self.path = path
        self.write = write
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _err(path, "open", exc)
        self.is_block = stat.S_ISBLK(st.st_mode)
        if not (self.is_block or stat.S_ISREG(st.st_mode)):
            raise ResyncError("%s: expected an image file or a block device, got another file type" % path)
        flags = os.O_RDWR if write else os.O_RDONLY
        if write and exclusive and self.is_block:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(path, flags)
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                raise ResyncError("%s: block device is in use (mounted or opened exclusively, "
                                  "e.g. by a running domain); refusing to write it" % path)
            raise _err(path, "open", exc)
        if (write and exclusive) or shared:
            try:
                fcntl.flock(self.fd, (fcntl.LOCK_EX if write and exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
            except (IOError, OSError) as exc:
                os.close(self.fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise TargetBusyError("%s: another resync is writing %sthis target"
                                          % (path, "or verifying " if write else ""))
                raise _err(path, "lock", exc)
        self.size = os.lseek(self.fd, 0, os.SEEK_END)
        #: offsets of block-device ranges just dropped and announced (will_need)
        self._fresh = set()
        self.bytes_read = 0
        self.bytes_written = 0

    def close(self):
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def read_at(self, offset, length):
        """:returns: exactly ``length`` bytes from ``offset`` (short only at EOF)."""
        if self.is_block:
            if offset in self._fresh:
                self._fresh.discard(offset)
            else:
                self._uncache(offset, length)
        parts = []
        got = 0
        try:
            if not _HAS_PREAD:
                os.lseek(self.fd, offset, os.SEEK_SET)
            while got < length:
                if _HAS_PREAD:
                    b = os.pread(self.fd, length - got, offset + got)  # novm
                else:
                    b = os.read(self.fd, length - got)
                if not b:
                    break
                parts.append(b)
                got += len(b)
        except OSError as exc:
            raise _err(self.path, "read at %d" % offset, exc)
        self.bytes_read += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def read_exactly(self, offset, length):
        """:meth:`read_at`, but EOF before ``length`` bytes is an error (the
        image shrank, or a range lies past its end)."""
        data = self.read_at(offset, length)
        if len(data) != length:
            raise ResyncError("%s: short read at %d: expected %d bytes, got %d"
                              % (self.path, offset, length, len(data)))
        return data

    def write_at(self, offset, data):
        view = memoryview(data)
        pos = offset
        try:
            if not _HAS_PREAD:
                os.lseek(self.fd, offset, os.SEEK_SET)
            while len(view):
                if _HAS_PREAD:
                    n = os.pwrite(self.fd, view, pos)  # novm
                else:
                    n = os.write(self.fd, view)
                view = view[n:]
                pos += n
        except OSError as exc:
            raise _err(self.path, "write at %d" % offset, exc)
        self.bytes_written += pos - offset

    def zero_range(self, offset, length):
        """Make ``[offset, offset+length)`` read as zeros (a hole when possible)."""
        if length <= 0:
            return
        if self.is_block:
            try:
                fcntl.ioctl(self.fd, _BLKZEROOUT, struct.pack("QQ", offset, length))
                return
            except (IOError, OSError):
                pass
        else:
            fa = _fallocate()
            if fa is not None and fa(self.fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE,
                                     offset, length) == 0:
                return
        end = offset + length
        while offset < end:
            n = min(len(_ZERO_PIECE), end - offset)
            self.write_at(offset, _ZERO_PIECE[:n] if n < len(_ZERO_PIECE) else _ZERO_PIECE)
            offset += n

    def next_data(self, offset):
        """:returns: the first offset >= ``offset`` holding data
        (``SEEK_DATA``; everything before it is a hole), the size when only
        a hole follows, or ``offset`` itself where holes cannot be asked
        about (block devices, old file systems)."""
        if self.is_block:
            return offset
        try:
            return os.lseek(self.fd, offset, _SEEK_DATA)
        except OSError as exc:
            if exc.errno == errno.ENXIO:
                return self.size
            return offset

    def next_hole(self, offset):
        """:returns: the first offset >= ``offset`` in a hole (``SEEK_HOLE``;
        the size when data runs to the end, or where it cannot be asked)."""
        if self.is_block:
            return self.size
        try:
            return os.lseek(self.fd, offset, _SEEK_HOLE)
        except OSError:
            return self.size

    def will_need(self, offset, length):
        """Ask the kernel to start reading ``[offset, offset+length)`` now
        (``POSIX_FADV_WILLNEED``): scattered extents then load in parallel
        instead of one synchronous read after the other.  A block device's
        range is first dropped from the cache, so what loads is the device's."""
        if self.is_block:
            self._uncache(offset, length)
            if len(self._fresh) < 4096:
                self._fresh.add(offset)
        try:
            _advise(self.fd, offset, length, _POSIX_FADV_WILLNEED)
        except OSError:
            pass    # only a hint

    def _uncache(self, offset, length):
        """Drop a block device's clean cached pages of a range, so the next
        read asks the device (see the module's note).  Not a hint: where it
        cannot be done, reading on could return bytes the source no longer
        holds, so that is an error."""
        try:
            done = _advise(self.fd, offset, length, _POSIX_FADV_DONTNEED)
        except OSError as exc:
            raise _err(self.path, "drop the cached pages at %d" % offset, exc)
        if not done:
            raise ResyncError("%s: cannot drop the block device's cached pages (no posix_fadvise): "
                              "its reads could be stale" % self.path)

    def sync(self):
        try:
            if hasattr(os, "fdatasync"):
                os.fdatasync(self.fd)
            else:
                os.fsync(self.fd)
        except OSError as exc:
            raise _err(self.path, "fsync", exc)


def disk_size(path):
    with BlockFile(path) as f:
        return f.size


def is_zero(buf, _z=_ZERO_PIECE):
    """True when ``buf`` (bytes or memoryview, <= 1 MiB) is all zeros."""
    n = len(buf)
    if isinstance(buf, memoryview) and _MV_INT_ITEMS:
        # Python 3 compares a memoryview item by item (~100x slower than
        # memcmp): rule out data by a few bytes, else compare a copy
        if n and (buf[0] or buf[n - 1] or buf[n // 2]):
            return False
        buf = buf.tobytes()
    return buf == _z[:n] if n != len(_z) else buf == _z
