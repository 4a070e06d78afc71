"""Epoch bookkeeping of a checkpoint-consistent disk replica (pure core).

The rules (docs/design/xl-disk-replication.md):

- every guest write carries the epoch it was received in on the primary;
  epoch N is the writes between cut N-1 and cut N, and cut N is made while
  the guest is suspended for checkpoint N;
- epochs arrive in order; a write for an epoch already cut, or a cut whose
  count of writes or bytes differs from what arrived, is an error;
- epoch N is applied to the backup's disk only when checkpoint N is
  committed (libxl's CHECKPOINT_END N reached the backup), after every
  earlier epoch; committing an epoch that was not cut is an error;
- at failover every epoch not committed is dropped.

:class:`EpochLedger` holds only positions (``where``: whatever the storage
adapter uses to find a write again) so that it stays free of I/O.
"""
from __future__ import absolute_import, division, print_function

import collections

from xen_remus_ext.errors import ReplicationError

PendingWrite = collections.namedtuple("PendingWrite", "offset length where")


class EpochLedger(object):
    def __init__(self, size=None):
        self.size = size
        self.open_epoch = 0          # the epoch writes go to now
        self.committed = -1          # last committed epoch
        self._writes = collections.OrderedDict()   # epoch -> [PendingWrite]
        self._sealed = {}            # epoch -> (writes, bytes)

    def add_write(self, epoch, offset, length, where):
        if epoch != self.open_epoch:
            raise ReplicationError("write for epoch %d while epoch %d is open" % (epoch, self.open_epoch))
        if offset < 0 or length <= 0 or (self.size is not None and offset + length > self.size):
            raise ReplicationError("write of %d bytes at %d outside the %s-byte disk"
                                   % (length, offset, self.size))
        self._writes.setdefault(epoch, []).append(PendingWrite(offset, length, where))

    def cut(self, epoch, writes, nbytes):
        if epoch != self.open_epoch:
            raise ReplicationError("cut of epoch %d while epoch %d is open" % (epoch, self.open_epoch))
        got = self._writes.get(epoch, [])
        got_bytes = sum(w.length for w in got)
        if (len(got), got_bytes) != (writes, nbytes):
            raise ReplicationError("epoch %d: the primary cut %d writes / %d bytes, %d / %d arrived"
                                   % (epoch, writes, nbytes, len(got), got_bytes))
        self._sealed[epoch] = (writes, nbytes)
        self.open_epoch = epoch + 1

    def commit(self, epoch):
        """The writes to apply for checkpoint ``epoch``, in arrival order."""
        if epoch != self.committed + 1:
            raise ReplicationError("commit of epoch %d after epoch %d" % (epoch, self.committed))
        if epoch not in self._sealed:
            raise ReplicationError("checkpoint %d committed before the primary cut its disk epoch" % epoch)
        del self._sealed[epoch]
        self.committed = epoch
        return self._writes.pop(epoch, [])

    def pending(self):
        """(epochs, writes, bytes) held and not committed."""
        ws = [w for lst in self._writes.values() for w in lst]
        return len(self._writes), len(ws), sum(w.length for w in ws)

    def failover(self):
        """Drop every epoch not committed; returns (epochs, writes, bytes) dropped."""
        dropped = self.pending()
        self._writes.clear()
        self._sealed.clear()
        return dropped
