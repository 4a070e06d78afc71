"""Disk passes of a failback, over the :class:`ports.DiskSync` port.

:func:`send_final_delta` (used by the runner and by the xend migration hook,
which must not import the runner) sends every journaled disk's last pass;
:func:`sync_waiting` retries a pass whose target an earlier, killed run's
pass still holds.
"""
from __future__ import absolute_import, division, print_function

import logging

from xen_remus_ext.errors import TargetBusyError
from xen_remus_ext.failback.journal import Delta
from xen_remus_ext.failback.options import FailbackOptions

LOG = logging.getLogger(__name__)


def sync_waiting(disk_sync, clock, opts, src, dest, **kw):
    """``disk_sync.sync`` that waits (up to ``opts.settle_timeout``) while the
    target is still held by a resync of an earlier, killed run.

    :param opts: :class:`FailbackOptions` (or a dict of them)
    """
    opts = FailbackOptions.from_dict(opts)
    deadline = None
    while True:
        try:
            return disk_sync.sync(src, dest, **kw)
        except TargetBusyError:
            # a killed run's pass may still be finishing on the host that ran it
            now = clock.now()
            deadline = deadline if deadline is not None else now + float(opts.settle_timeout)
            if now >= deadline:
                raise
            LOG.info("%s: target busy (an earlier pass still running); waiting", dest)
            clock.sleep(float(opts.settle_poll))


def send_final_delta(rec, disk_sync, tracker_fn, clock, by, opts=None):
    """Send every journaled disk's final pass; mark ``rec['delta']`` sent.

    Shared by the runner and the xend migration hook (delta.py).  The caller
    guarantees the domain no longer writes (suspended or paused).
    """
    opts = FailbackOptions.from_dict(opts)
    journaled = rec.get("options", {})
    start = clock.now()
    for d in rec["disks"]:
        tr = tracker_fn(d["vdev"]) if tracker_fn is not None else None
        if tr is not None and not tr.trustworthy():
            tr = None
        d["final"] = sync_waiting(disk_sync, clock, opts, d["src"], d["dest"], tracker=tr,
                                  rate=None, verify=bool(journaled.get("verify")),
                                  discard_target=bool(journaled.get("discard_peer")), final=True)
    end = clock.now()
    rec["delta"] = Delta(True, by, end, end - start).to_dict()
    return rec
