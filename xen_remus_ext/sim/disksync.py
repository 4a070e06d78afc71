"""The failback runner's disk port over simulated hosts.

:class:`SimDiskSync` implements :class:`ports.DiskSync` for disks that
live on sim hosts: paths are the host-side files ``SimToolstack.disk_path``
returns; generations are read with :mod:`resync.meta` (the hosts and the
controller share one state directory, records keyed by each host's own
file); the data moves by asking the SOURCE host's agent to run the resync,
so it crosses a TCP socket into the destination host's receiver, as it
would between two real hosts.
"""
from __future__ import absolute_import, division, print_function

import os

from xen_remus_ext.errors import ResyncError
from xen_remus_ext.ports import DiskSync


class SimDiskSync(DiskSync):
    """:param toolstacks: the :class:`sim.toolstack.SimToolstack` of every host."""

    def __init__(self, toolstacks):
        self.roots = []
        for ts in toolstacks:
            root = os.path.realpath(ts.host_info()["root"])
            self.roots.append((root.rstrip("/") + "/", ts))

    def _where(self, path):
        real = os.path.realpath(path)
        for root, ts in self.roots:
            if real.startswith(root):
                return ts, "/" + real[len(root):]
        raise ResyncError("disk %s: expected a file under a sim host's root (%s), got none"
                          % (path, ", ".join(r for r, _ in self.roots)))

    def size(self, path):
        try:
            return os.path.getsize(path)
        except OSError as exc:
            raise ResyncError("disk %s: expected a readable image, got %s" % (path, exc))

    def peer_size(self, dest):
        try:
            return os.path.getsize(dest)
        except OSError:
            return None

    def peer_state(self, dest):
        from xen_remus_ext.resync.disksync import local_state
        return local_state(dest)

    def create(self, dest, size):
        """The host's agent creates it (sparse) and exports it to its receiver."""
        ts, guest_path = self._where(dest)
        if os.path.exists(dest):
            raise ResyncError("disk %s: expected it absent to create it, found it existing; refusing "
                              "to replace it" % dest)
        ts.disk_create(guest_path, size)

    def relation(self, src, dest):
        from xen_remus_ext.resync import meta
        return meta.compare(meta.ensure(src, self.size(src)), meta.load(dest))

    def sync(self, src, dest, tracker=None, rate=None, verify=False, discard_target=False,
             final=False, events=None):
        ts, guest_path = self._where(src)
        peer, _ = self._where(dest)
        res = ts.resync_to(guest_path, peer.name, mode="auto", tracker=tracker, verify=verify,
                           discard_target=discard_target)
        if events is not None:
            events(dict(res, result="ok"))
        return dict((k, res.get(k)) for k in self.RESULT_FIELDS)
