"""Generation rotation at the moment a copy starts taking writes its peer
does not see, on real hosts (xend, xl).  Run by ``xen-remus supervise``.

One rule covers every case, on whichever host it runs:

    a domain that runs here, unpaused, with no Remus sender for it here, and
    no protect or failback of it under way here, writes to copies its peer
    does not see.

That is the backup resuming the domain at a failover, the primary whose
Remus sender exited while the domain keeps running, and a guest booted
again on the old primary after it came back (split brain).  Each remus disk
of such a domain whose record says it is in step with its peer (no
``bitmap`` generation) is rotated (:func:`meta.rotate`): the copy gets a new
``current`` and remembers the shared one as ``bitmap``.  A copy already
rotated is left alone, so a domain that runs on alone for days rotates once.

The condition must hold for ``grace`` seconds first: a Remus start
(``protect``, failback's protect step) and an xend migration (the domain
arrives running a moment before Remus starts) pass through it briefly.
A Remus backup's own copy of the domain (xl names it ``NAME--incoming``;
both toolstacks keep it paused) is never taken for the domain.

Pure: the toolstack, the clock and the journal directory are given.
"""
from __future__ import absolute_import, division, print_function

import logging

from xen_remus_ext.errors import XenRemusError
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.resync import meta

LOG = logging.getLogger(__name__)

INCOMING_SUFFIX = "--incoming"


def disk_paths(toolstack, config):
    """This host's copy of each remus disk of ``config``, and of each other
    writable disk (xl names none "remus": with memory-only Remus every
    writable disk has a peer copy).  Only copies with a generation record
    are ever rotated, so a disk nobody replicates is never touched."""
    out = []
    seen = set()
    for d in list(config.remus_disks) + [d for d in config.disks if d.mode and "w" in d.mode]:
        path = d.path
        if not path or d.vdev in seen:
            continue
        seen.add(d.vdev)
        out.append((d.vdev, toolstack.disk_path(path) or path))
    return out


def rotate_unseen(toolstack, name, reason, state_dir=None):
    """Rotate every disk copy of ``name`` here (:func:`disk_paths`) whose
    record says it is still in step with its peer (no bitmap generation).  :returns: list of
    ``{vdev, path, old, new}`` of the copies rotated."""
    out = []
    config = toolstack.domain_config(name)
    for vdev, path in disk_paths(toolstack, config):
        m = meta.load(path)
        if m is None or m.bitmap is not None or not m.consistent:
            continue
        new = meta.rotate(path)
        LOG.info("generation %s %s (%s): %s -> %s: %s", name, vdev, path, m.current, new.current, reason)
        out.append({"vdev": vdev, "path": path, "old": m.current, "new": new.current, "reason": reason})
    return out


class Watcher(object):
    """Applies the rule above at each :meth:`poll`.

    :param toolstack: this host's :class:`ports.Toolstack`.
    :param clock: a :class:`ports.Clock`.
    :param grace: seconds the condition must hold before rotating.
    :param domains: names to watch (None: every domain here).
    :param sender_here: callable ``(name) -> bool``: a Remus sender for
        ``name`` runs on this host that the toolstack did not start (xl
        remus run here over ssh by a failback on the peer).
    """

    def __init__(self, toolstack, clock, grace=10.0, domains=None, state_dir=None, sender_here=None):
        self.sender_here = sender_here
        self.ts = toolstack
        self.clock = clock
        self.grace = float(grace)
        self.domains = set(domains) if domains else None
        self.state_dir = state_dir
        self.since = {}        # name -> when the condition was first seen
        self.done = set()      # names rotated during this unprotected stretch

    def _busy(self, name):
        """A protect or failback of ``name`` journaled here and unfinished."""
        try:
            rec = journal.load(name, self.state_dir)
        except XenRemusError:
            return True     # unreadable: do not guess
        return rec is not None and rec["state"] not in machine.TERMINAL

    def poll(self):
        """One look at the world.  :returns: list of rotations made."""
        now = self.clock.now()
        seen = set()
        rotated = []
        for info in self.ts.list_domains():
            name = info.name
            if info.domid == 0 or name.endswith(INCOMING_SUFFIX):
                continue
            if self.domains is not None and name not in self.domains:
                continue
            seen.add(name)
            try:
                exposed = not info.paused and not self.ts.remus_running(name) and not self._busy(name) \
                    and not (self.sender_here is not None and self.sender_here(name))
            except XenRemusError as exc:
                LOG.debug("supervise %s: cannot tell (%s)", name, exc)
                continue
            if not exposed:
                self.since.pop(name, None)
                self.done.discard(name)
                continue
            first = self.since.setdefault(name, now)
            if name in self.done or now - first < self.grace:
                continue
            try:
                rotated += rotate_unseen(self.ts, name, "runs here unpaused without a Remus sender for %.0f s "
                                         "(failover, replication ended, or started outside protection)"
                                         % (now - first), self.state_dir)
            except XenRemusError as exc:
                LOG.warning("supervise %s: generation not rotated: %s", name, exc)
                continue
            self.done.add(name)
        for name in list(self.since):
            if name not in seen:
                self.since.pop(name, None)
                self.done.discard(name)
        return rotated

    def run(self, interval=1.0, stop=None, max_wait=60.0):
        """Poll every ``interval`` seconds until ``stop()`` is true.

        While the toolstack does not answer (xend not started yet, xl
        missing), the looks back off: twice as far apart after each failed
        one, up to ``max_wait`` seconds.  What it waits for is logged once
        when the toolstack stops answering (and again only if its error
        changes), and once when it answers again; ``stop()`` is still
        asked every ``interval``."""
        wait = interval
        away = None     # the toolstack's error while it does not answer
        while stop is None or not stop():
            try:
                self.poll()
            except XenRemusError as exc:
                if away is None or str(exc) != away:
                    LOG.warning("supervise: waiting for the %s toolstack to answer (looking again in "
                                "%g s, then less and less often, down to once every %g s): %s",
                                self.ts.kind or "local", wait, max(max_wait, interval), exc)
                away = str(exc)
                self._sleep(wait, interval, stop)
                wait = min(wait * 2, max(max_wait, interval))
                continue
            if away is not None:
                LOG.info("supervise: the %s toolstack answers again; looking every %g s",
                         self.ts.kind or "local", interval)
                away = None
                wait = interval
            self.clock.sleep(interval)

    def _sleep(self, seconds, step, stop):
        """Sleep ``seconds`` in slices of ``step``, ending early once ``stop()``."""
        left = seconds
        while left > 0 and (stop is None or not stop()):
            self.clock.sleep(min(step, left))
            left -= step
