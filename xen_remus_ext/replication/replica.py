"""The backup's copy of a replicated disk (adapter: files).

Writes of open and cut epochs wait in a spool file next to nothing else
(append-only, so a large epoch costs disk, not memory); committing epoch N
copies its writes, in arrival order, into the disk image or block device and
fsyncs it before the commit is reported.  At failover the spool is dropped:
the disk holds exactly the committed checkpoints.
"""
from __future__ import absolute_import, division, print_function

import os

from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication.epochs import EpochLedger


def device_size(fd):
    return os.lseek(fd, 0, os.SEEK_END)


class Replica(object):
    """:param target: the backup's disk image or block device.
    :param spool: path of the spool file (created, truncated)."""

    def __init__(self, target, spool):
        self.target = target
        self.spool_path = spool
        try:
            self._fd = os.open(target, os.O_RDWR)
        except OSError as exc:
            raise ReplicationError("replica %s: %s" % (target, exc.strerror))
        self.size = device_size(self._fd)
        self._spool = open(spool, "w+b")
        self._end = 0
        self.ledger = EpochLedger(self.size)
        self.applied_writes = 0
        self.applied_bytes = 0

    def write(self, epoch, offset, data):
        self.ledger.add_write(epoch, offset, len(data), self._end)
        self._spool.seek(self._end)
        self._spool.write(data)
        self._end += len(data)

    def cut(self, epoch, writes, nbytes):
        self.ledger.cut(epoch, writes, nbytes)

    def commit(self, epoch):
        """Apply epoch ``epoch`` and fsync; returns (writes, bytes) applied."""
        todo = self.ledger.commit(epoch)
        if todo:
            self._spool.flush()
        nbytes = 0
        for w in todo:
            self._spool.seek(w.where)
            data = self._spool.read(w.length)
            if len(data) != w.length:
                raise ReplicationError("spool %s: short read at %d" % (self.spool_path, w.where))
            os.lseek(self._fd, w.offset, os.SEEK_SET)
            view = memoryview(data)
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
            nbytes += w.length
        os.fsync(self._fd)
        self.applied_writes += len(todo)
        self.applied_bytes += nbytes
        if self.ledger.pending()[1] == 0:
            self._spool.seek(0)
            self._spool.truncate()
            self._end = 0
        return len(todo), nbytes

    def failover(self):
        """Drop what is not committed; returns (epochs, writes, bytes) dropped."""
        dropped = self.ledger.failover()
        self._spool.seek(0)
        self._spool.truncate()
        self._end = 0
        return dropped

    def close(self):
        self._spool.close()
        try:
            os.unlink(self.spool_path)
        except OSError:
            pass
        os.close(self._fd)
