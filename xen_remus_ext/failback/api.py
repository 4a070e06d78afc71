"""The one entry to failback, resync-domain and status.

Called by ``xen-remus failback|protect|resync-domain|status`` (cli/failback_cmd.py),
and through it by ``xm remus-*`` and ``XendDomain.domain_remus_*``.

:func:`run_failback` (``--dry-run``, ``--resume``, ``--abort``,
``--reverse-only``), :func:`run_protect` (the same journal and options),
:func:`resync_domain` (what ``xm remus-resync DOMAIN
HOST`` does: every remus disk of DOMAIN brought up to date on HOST from
here) and :func:`status`.  Each returns a plain dict (JSON-able).
"""
from __future__ import absolute_import, division, print_function

import logging

from xen_remus_ext.errors import FailbackError, ToolstackError, XenRemusError
from xen_remus_ext.failback import journal, machine, preflight
from xen_remus_ext.failback.orchestrator import Orchestrator

LOG = logging.getLogger(__name__)


def run_failback(toolstack, domain, host, peer_toolstack, reverse_only=False, dry_run=False,
                 resume=False, abort=False, options=None, disk_sync=None, progress=None, state_dir=None,
                 clock=None, xenstore=None, peer_xenstore=None):
    """Fail ``domain`` back from this host to ``host`` (or, ``reverse_only``,
    protect it from here toward ``host``).

    :param peer_toolstack: ``host``'s toolstack (``wiring.open_site`` builds it)
    :param options: dict of :data:`orchestrator.DEFAULTS` keys.
    :returns: dict: ``domain, host, mode, state, plan`` (dry run),
        ``checks``, ``downtime``, ``journal`` (the record's path) ...
    :raises FailbackError: refused or failed (the journal keeps where).
    """
    mode = machine.REVERSE if reverse_only else machine.FAILBACK
    return _run(mode, toolstack, domain, host, peer_toolstack, dry_run, resume, abort, options, disk_sync,
                progress, state_dir, clock, xenstore, peer_xenstore)


def run_protect(toolstack, domain, host, peer_toolstack, dry_run=False, resume=False, abort=False,
                options=None, disk_sync=None, progress=None, state_dir=None, clock=None, xenstore=None,
                peer_xenstore=None):
    """Protect ``domain`` (running here) with Remus toward ``host``: seed each
    missing backup copy, bring every copy up to date, start Remus.  Journaled
    like a failback (the same journal file, mode ``protect``).

    :returns: dict as :func:`run_failback`'s.
    :raises FailbackError: refused or failed (the journal keeps where).
    """
    return _run(machine.PROTECT_MODE, toolstack, domain, host, peer_toolstack, dry_run, resume, abort, options,
                disk_sync, progress, state_dir, clock, xenstore, peer_xenstore)


def _run(mode, toolstack, domain, host, peer_toolstack, dry_run, resume, abort, options, disk_sync, progress,
         state_dir, clock, xenstore, peer_xenstore):
    options = dict(options or {})
    if sum(1 for f in (dry_run, resume, abort) if f) > 1:
        raise FailbackError("%s: --dry-run, --resume and --abort exclude each other" % mode)
    if peer_toolstack is None:
        raise FailbackError("%s of %s to %s: expected the peer's toolstack, got none" % (mode, domain, host))
    peer = peer_toolstack
    orch = Orchestrator(toolstack, peer, domain, host, mode=mode, options=options, disk_sync=disk_sync,
                        clock=clock, state_base=state_dir, progress=progress, xenstore=xenstore,
                        peer_xenstore=peer_xenstore)
    out = {"domain": domain, "host": host, "mode": mode,
           "journal": journal.journal_path(domain, state_dir)}
    if dry_run:
        state, lines, checks, facts = orch.dry_run()
        rep = orch.opts.replicate
        out.update(state=state, plan=lines, checks=[c.to_dict() for c in checks],
                   replicate=rep.to_dict() if rep is not None else None,
                   ok=all(c.ok for c in checks),
                   disks=[dict((k, v) for k, v in d.items()) for d in facts["disks"]],
                   reverse=facts["direction"])
        return out
    LOG.info("%s %s toward %s: start%s", mode, domain, host, " (--abort)" if abort else "")
    try:
        rec = orch.abort() if abort else orch.run(resume=resume)
    except XenRemusError as exc:
        LOG.info("%s %s toward %s: end: failed: %s", mode, domain, host, exc)
        raise
    LOG.info("%s %s toward %s: end: %s%s", mode, domain, host, rec["state"],
             "; downtime %.3f s" % rec["downtime"] if rec.get("downtime") is not None else "")
    out.update(state=rec["state"], downtime=rec.get("downtime"), downtime_max=rec.get("downtime_max"),
               disks=rec.get("disks"), delta=rec.get("delta"), reverse=rec.get("reverse"),
               timing=rec.get("timing"), replicate=(rec.get("options") or {}).get("replicate"))
    return out


def resync_domain(toolstack, domain, host, peer_toolstack=None, options=None, disk_sync=None,
                  progress=None):
    """Bring ``host``'s copy of every remus disk of ``domain`` up to date from here.

    :param peer_toolstack: ``host``'s toolstack when its disks are found
        through it (simulated hosts), else None: they are reached at
        ``options["dest_template"]``.

    The domain keeps running; the result is a consistent copy only of what
    was on disk when each block was read (use failback or --reverse-only for
    a copy that stays in step).
    :returns: dict ``{"domain", "host", "disks": [{vdev, src, dest, relation, result...}]}``.
    """
    options = dict(options or {})
    orch = Orchestrator(toolstack, peer_toolstack, domain, host, options=options, disk_sync=disk_sync,
                        progress=progress)
    if preflight.find_domain(toolstack, domain) is None:
        raise FailbackError("%s: expected it to run on this host, not found" % domain, step="resync")
    config = toolstack.domain_config(domain)
    pairs = orch.disk_pairs(config)
    if not pairs:
        raise FailbackError("%s: expected at least one remus disk, got none" % domain, step="resync")
    out = {"domain": domain, "host": host, "disks": []}
    for disk, src, dest in pairs:
        rel = orch.disks.relation(src, dest)
        if rel not in preflight.SAFE_RELATIONS and not options.get("discard_peer"):
            raise FailbackError("%s: expected %s's copy %s to be an ancestor of ours, got %s%s; "
                                "refusing (name it the loser with --discard-target)"
                                % (disk.vdev, host, dest, rel, ": split brain" if rel == "split-brain" else ""),
                                step="resync")
        res = orch.disks.sync(src, dest, rate=options.get("rate"), verify=bool(options.get("verify")),
                              discard_target=bool(options.get("discard_peer")))
        orch.progress("%s %s: %s -> %s: %s, %d bytes sent in %.2f s"
                      % (domain, disk.vdev, src, dest, res.get("mode"), res.get("bytes_sent") or 0,
                         res.get("seconds") or 0.0))
        out["disks"].append(dict(res, vdev=disk.vdev, src=src, dest=dest, relation=rel))
    return out


def status(toolstack, domain=None, state_dir=None, xenstore=None):
    """:returns: list of dicts, one per domain (``domain`` only, if given):
    ``name, domid, state, protected, failback {mode, host, state, step,
    error, downtime, updated}, disks, backup, crashed`` and the journals of
    domains not running here.  ``backup`` is None for a primary, else
    ``{"state": "receiving"|"broken", "checkpoints": N}``: the domain here is
    a Remus backup's paused copy (xl names it ``NAME--incoming``)."""
    rows = []
    seen = set()
    for info in toolstack.list_domains():
        if info.domid == 0:
            continue
        name = info.name
        if name.endswith(INCOMING_SUFFIX):      # xl migrate-receive's name for a copy arriving
            name = name[:-len(INCOMING_SUFFIX)]
        if domain is not None and domain not in (name, info.name, str(info.domid)):
            continue
        backup = _remus_backup(toolstack, info)
        try:
            protected = False if backup is not None else bool(toolstack.remus_running(info.name))
        except ToolstackError as exc:
            LOG.debug("%s: remus state unknown: %s", info.name, exc)
            protected = None
        row = {"name": name, "domid": info.domid, "state": preflight.domain_state(info),
               "here": True, "protected": protected, "failback": _journal_summary(name, state_dir),
               "disks": _disk_generations(toolstack, info.name),
               "xenstore": _xs_status(xenstore, info.domid),
               "backup": backup, "crashed": _crashed(info)}
        rows.append(row)
        seen.add(name)
    for name in journal.list_domains(state_dir):
        if name in seen or (domain is not None and name != domain):
            continue
        summary = _journal_summary(name, state_dir)
        rows.append({"name": name, "domid": None, "state": None, "here": False, "protected": None,
                     "failback": summary})
    if domain is not None and not rows:
        raise FailbackError("%s: expected a domain here or a failback journal, found neither" % domain)
    return rows


INCOMING_SUFFIX = "--incoming"


def _remus_backup(toolstack, info):
    """None, or ``{"state": "receiving"|"broken", "checkpoints": N|None}``
    when the domain here is a Remus backup's paused copy, not a primary."""
    try:
        return toolstack.remus_backup(info.name)
    except ToolstackError as exc:
        LOG.debug("%s: backup state unknown: %s", info.name, exc)
        return None


def _crashed(info):
    st = info.state or ""
    return (len(st) == 6 and st[4] == "c") or st == "crashed"


def _xs_status(xs, domid):
    if xs is None:
        return None
    from xen_remus_ext import status_keys as xs_status
    try:
        st = xs_status.read_status(xs, domid)
    except XenRemusError as exc:
        return {"error": str(exc)}
    return st.to_dict() if st is not None else None


def _disk_generations(toolstack, name):
    """Each remus disk's generation record on this host (resync/meta.py)."""
    from xen_remus_ext.resync import meta
    out = []
    try:
        config = toolstack.domain_config(name)
    except XenRemusError as exc:
        LOG.debug("%s: config unreadable for status: %s", name, exc)
        return out
    for d in config.remus_disks:
        path = toolstack.disk_path(d.path) or d.path
        try:
            m = meta.load(path)
        except XenRemusError as exc:
            out.append({"vdev": d.vdev, "path": d.path, "error": str(exc)})
            continue
        out.append({"vdev": d.vdev, "path": d.path, "backup": d.remus.host,
                    "generation": m.current if m else None, "bitmap": m.bitmap if m else None,
                    "consistent": m.consistent if m else None})
    return out


def _journal_summary(name, state_dir):
    try:
        rec = journal.load(name, state_dir)
    except XenRemusError as exc:
        return {"error": str(exc)}
    if rec is None:
        return None
    return {"mode": rec["mode"], "host": rec["host"], "state": rec["state"], "step": rec.get("step"),
            "error": rec.get("error"), "downtime": rec.get("downtime"), "updated": rec.get("updated"),
            "next": [s for s, _ in machine.plan(rec["mode"], rec["state"])],
            "delta": rec.get("delta"), "replicate": (rec.get("options") or {}).get("replicate"),
            "trackers": [{"vdev": d.get("vdev"), "tracker": d.get("tracker"), "why": d.get("tracker_why"),
                          "final": (d.get("final") or {}).get("mode")} for d in rec.get("disks") or ()]}
