"""The final disk delta of a migrating domain, for the xend migration hook.

xend runs its ``external-migration-tool`` at every device-migrate step; at
step 2 the domain is suspended (docs/xen-facts.md section 4), so its disks are
quiet and their last changes can be sent before xend goes on.  The hook
(written elsewhere) calls :func:`final_delta_for`; it finds the domain's
failback journal, sends the delta of every journaled disk, and records it in
the journal so the orchestrator (waiting in ``migrate``) skips its own pass.

Without a failback journal in its migrate step the call does nothing: an
ordinary ``xm migrate`` passes through untouched.
"""
from __future__ import absolute_import, division, print_function

import logging

from xen_remus_ext.errors import FailbackError, XenRemusError
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.failback.disks import send_final_delta
from xen_remus_ext.ports import SystemClock

LOG = logging.getLogger(__name__)


def final_delta_for(domname, dst_host, state_dir=None, disk_sync=None, tracker_fn=None, clock=None,
                    disk_sync_for=None, handoff=None):
    """Send the final disk delta of ``domname``'s failback to ``dst_host``.

    :param state_dir: the state directory holding ``failback/`` (default:
        the package's).
    :param disk_sync: the :class:`ports.DiskSync` to send with, or
    :param disk_sync_for: ``(ssh=, key_file=) -> DiskSync``, called with
        the options the failback journaled (``wiring.resync_disk_sync``).
    :param tracker_fn: ``vdev -> Tracker or None``: the dirty-block source of
        each disk (default: none, every disk's delta is found by checksum).
    :param handoff: ``(domname, dst_host) -> delta record or None``: asks
        the failback process, which opened the delta's connections before the
        suspend, to send it (toolstack/delta_handoff.py); None from it (no such
        process) or no ``handoff``: this process sends.  It raises
        :class:`FailbackError` when the delta could not go, and another
        :class:`XenRemusError` when the process ended without answering:
        then this process sends, unless the journal shows it went.
    :returns: the journal's ``delta`` record, or None when no failback of
        ``domname`` toward ``dst_host`` is migrating (nothing to do).
    :raises FailbackError: the delta could not be sent; the hook must make
        the migration fail, since the destination's disk would be stale.
    """
    rec = journal.load(domname, state_dir)
    if rec is None or rec["state"] in machine.TERMINAL:
        LOG.debug("%s: no failback journal; migration hook has nothing to send", domname)
        return None
    if rec["mode"] != machine.FAILBACK or rec.get("step") != machine.MIGRATE:
        LOG.debug("%s: failback journal in %s/%s, not migrating; nothing to send",
                  domname, rec["state"], rec.get("step"))
        return None
    if rec["host"] != dst_host:
        raise FailbackError("%s: failback journal migrates to %s, but xend migrates it to %s; "
                            "refusing to leave the disks behind" % (domname, rec["host"], dst_host),
                            state=rec["state"], step=machine.FINAL_DELTA)
    if journal.delta_of(rec).sent:
        return rec["delta"]
    if handoff is not None:
        try:
            got = handoff(domname, dst_host)
        except FailbackError:
            raise
        except XenRemusError as exc:
            LOG.warning("%s: %s; sending the final delta from here", domname, exc)
            got = None
            rec = journal.load(domname, state_dir) or rec
            if journal.delta_of(rec).sent:
                return rec["delta"]
        if got is not None:
            LOG.info("%s: final disk delta sent by the failback process over its prepared connections",
                     domname)
            return got
        LOG.info("%s: no failback process serves the final delta here; opening its connections now "
                 "(inside the suspend window)", domname)
    opts = rec.get("options", {})
    if disk_sync is None and disk_sync_for is None:
        raise FailbackError("%s: final disk delta: expected a disk port, got none" % (domname,),
                            state=rec["state"], step=machine.FINAL_DELTA)
    sync = disk_sync or disk_sync_for(ssh=opts.get("ssh") or "ssh", key_file=opts.get("key_file"))
    clock = clock or SystemClock()
    LOG.info("%s: domain suspended for migration to %s: sending the final disk delta", domname, dst_host)
    try:
        send_final_delta(rec, sync, tracker_fn, clock, "xend-hook")
    except FailbackError:
        raise
    except Exception as exc:  # step boundary of the hook: journal it, then fail the migration
        journal.note(rec, clock.now(), "failed", machine.FINAL_DELTA, str(exc))
        rec["error"] = "final-delta (hook): %s" % exc
        journal.save(rec, state_dir)
        raise FailbackError("%s: final disk delta to %s failed: %s" % (domname, dst_host, exc),
                            state=rec["state"], step=machine.FINAL_DELTA)
    journal.note(rec, clock.now(), "delta", "xend-hook")
    journal.save(rec, state_dir)
    return rec["delta"]
