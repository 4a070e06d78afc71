"""Preflight of a failback: ``check_*`` only, nothing here changes anything.

Checks, in order (each a :class:`Check` with name, ok, detail):

``domain-here``     the domain runs (or is paused) on this host, not dom0
``unprotected``     no Remus sender for it runs here (failover left it bare)
``peer-reachable``  the peer's toolstack answers
``peer-free``       the peer has no domain of that name; a Remus backup copy
                    of it there whose stream ended (held paused, xl's
                    ``DOM--incoming``) is the stale backup of an earlier
                    protection and passes, to be discarded once every check
                    passed (``stale-backup``); one still receiving is refused
``peer-memory``     the peer's free memory holds the domain's memory
``migrate-paused``  (xl) ``xl migrate -p`` exists: Xen 4.8.0 or later
``migrate-hook``    (xend) the running xend sends the final delta at step 2
                    of its device migration (our external-migration-tool or
                    the blktap override): without it xend resumes the domain
                    on the destination's stale disk
``remus-disks``     the config has at least one remus disk
``backup-copy:VDEV`` (protect) the backup's copy is absent (to be seeded), or
                    an ancestor of ours; one with writes of its own, or with
                    no generation record, is refused unless --discard-peer
``generation:VDEV`` the peer's copy is an ancestor of ours by generation
                    (identical, target-behind or target-new); anything else is
                    split brain (or unrelated) and refused unless the admin
                    named the peer's copy as the one to discard
``size:VDEV``       the peer's copy has our size (when it can be known here)
``config-file``     (with a config file) it names the backup or reverses cleanly
``replicate-disk:VDEV`` (a replicated disk) the domain has it, the sender can run the relay
``replicate-served:VDEV@HOST`` its device is served with its control socket on both hosts
``disk-replication:VDEV`` (memory-only Remus) the disk is shared or DRBD, or
                    the operator accepted losing its writes at failover
``direction``       the config protects toward the intended backup, or can be
                    reversed to do so (:func:`plan_direction`)
``stale-backup``    (with a held copy on the peer) it is this domain's: the
                    same disks (vdev and image), and the generation checks
                    show the peer's copies ancestors of ours (or the operator
                    named them the loser with --discard-peer); the caller
                    then discards it through the port's ``remus_discard``
"""
from __future__ import absolute_import, division, print_function

import collections
import logging

from xen_remus_ext.errors import FailbackError, XenRemusError

LOG = logging.getLogger(__name__)

SAFE_RELATIONS = ("identical", "target-behind", "target-new")


class Check(collections.namedtuple("Check", "name ok detail")):
    __slots__ = ()

    def to_dict(self):
        return {"name": self.name, "ok": self.ok, "detail": self.detail}


def find_domain(toolstack, dom):
    """:returns: the :class:`model.DomainInfo` of ``dom`` in ``toolstack``'s
    list, or None (a failing list call propagates)."""
    for info in toolstack.list_domains():
        if info.name == dom or str(info.domid) == str(dom):
            if info.domid == 0:
                continue
            return info
    return None


#: the name xl's receiver (``xl migrate-receive``, so ``xl remus`` on the
#: backup) gives a copy while it arrives; the simulator keeps the name
INCOMING_SUFFIX = "--incoming"


def find_backup_copy(toolstack, dom):
    """The Remus backup copy of ``dom`` on ``toolstack``'s host: ``(info,
    backup)`` with ``backup`` as :meth:`ports.Toolstack.remus_backup` says
    (``state`` ``receiving`` or ``broken``), or None.  A failing call
    propagates."""
    for info in toolstack.list_domains():
        if info.domid == 0 or info.name not in (dom, dom + INCOMING_SUFFIX):
            continue
        backup = toolstack.remus_backup(info.name)
        if backup is not None:
            return info, backup
    return None


def _disk_set(config):
    return sorted((d.vdev, d.path or d.uname) for d in config.disks)


def check_stale_backup(peer, domain, host, stale, config, checks, discard_peer):
    """Is the held backup copy ``stale`` (``{"name", "domid"}``) on the peer
    provably the stale backup of this domain, to be discarded?  Only when
    its disks are this domain's and every generation check passed.

    :returns: ``(name, ok, detail)``
    """
    name = "stale-backup"
    what = "the held Remus backup copy %s (domid %s) of %s on %s" % (stale["name"], stale["domid"], domain, host)
    theirs, err = _safe(peer.domain_config, stale["name"])
    if err is not None:
        return name, False, "%s: cannot read its config to tell whose copy it is: %s; not discarding it" % (
            what, err)
    if _disk_set(theirs) != _disk_set(config):
        return name, False, ("%s: expected the same disks as %s here, got %s against %s; not discarding it "
                             "(destroy it by hand on %s if it is stale)"
                             % (what, domain, ", ".join("%s=%s" % d for d in _disk_set(theirs)) or "none",
                                ", ".join("%s=%s" % d for d in _disk_set(config)), host))
    gens = [c for c in checks if c.name.startswith(("generation:", "backup-copy:"))]
    bad = [c for c in gens if not c.ok]
    if not gens or bad:
        return name, False, ("%s: not discarding it: its disks' generations do not show it older than "
                             "this domain's copies (%s)" % (what, "; ".join(c.detail for c in bad) or
                                                            "no generation compared"))
    return name, True, ("%s: this domain's stale copy (same disks; %s): discarded before the copy goes there"
                        % (what, "the operator named the peer's copies the loser" if discard_peer and any(
                            "DISCARDING" in c.detail for c in gens) else "the peer's disk copies are ancestors "
                            "of ours"))


def domain_state(info):
    if info is None:
        return None
    return "paused" if info.paused else "running"


def plan_direction(config, backup, aliases=()):
    """Which remus disks of ``config`` replicate elsewhere than ``backup``.

    :param aliases: other names or addresses of the backup host, or
        ``ADDRESS:PORT`` endpoints where an address alone names no single
        host (a disk naming that endpoint names the backup).
    :returns: ``(config_for_backup, changed_vdevs)``: a config whose remus
        disks all name the backup (the same object when nothing changes).
    """
    names = set([backup]) | set(a for a in aliases if a)
    disks = []
    changed = []
    for d in config.disks:
        # a host-less spec (xl memory-only Remus) replicates to whichever host Remus is given
        if d.remus is not None and d.remus.host and d.remus.host not in names \
                and "%s:%s" % (d.remus.host, d.remus.port) not in names:
            old = "remus:%s:%s" % (d.remus.host, d.remus.port)
            if old not in d.uname:
                raise FailbackError("disk %s: expected %r in its uname to reverse it, got %r"
                                    % (d.vdev, old, d.uname), step="preflight")
            new = "remus:%s:%s" % (backup, d.remus.port)
            d = d._replace(uname=d.uname.replace(old, new, 1), remus=d.remus._replace(host=backup))
            changed.append(d.vdev)
        disks.append(d)
    if not changed:
        return config, []
    return config._replace(disks=tuple(disks)), changed


def _safe(fn, *args):
    try:
        return fn(*args), None
    except XenRemusError as exc:
        return None, exc
    except (IOError, OSError) as exc:
        return None, exc


def run_checks(toolstack, peer, domain, host, mode, backup, disk_pairs, disk_sync, discard_peer=False,
               backup_aliases=(), retarget_ts=None, config_file=None, memory_only=False, accept_disk_loss=False,
               shared_disks=(), replicate=None):
    """Run every check; :returns: ``(checks, facts)``.

    :param backup: the host Remus will protect toward afterwards (this host
        for a failback, ``host`` for reverse replication), or None if unknown.
    :param disk_pairs: callable ``(config) -> [(DiskSpec, src, dest)]``.
    :param backup_aliases: other names/addresses of the backup host.
    :param retarget_ts: the toolstack that must re-point the disks when the
        config names another backup (its ``check_retarget()`` must pass).
    :param config_file: the domain's config file, checked by :func:`check_config_file`.
    :param replicate: a :class:`model.ReplicatedDisk` (or None): the disk
        ``xen-remus replicate`` carries; ``toolstack`` (and ``peer`` for a
        failback, which protects from there) must replicate disks.
    """
    checks = []
    facts = {"config": None, "disks": [], "direction": []}

    def add(name, ok, detail):
        checks.append(Check(name, bool(ok), detail))
        (LOG.debug if ok else LOG.info)("preflight %s %s: %s", domain, name, detail)
        return ok

    info = find_domain(toolstack, domain)
    if not add("domain-here", info is not None,
               "%s runs here (domid %d, %s)" % (domain, info.domid, domain_state(info)) if info is not None
               else "%s: expected it to run on this host, not found" % domain):
        return checks, facts
    remus, err = _safe(toolstack.remus_running, domain)
    add("unprotected", err is None and not remus,
        "no Remus sender here" if err is None and not remus else
        ("cannot tell: %s" % err if err is not None else "%s: expected unprotected, Remus already runs" % domain))
    hinfo, err = _safe(peer.host_info)
    if not add("peer-reachable", err is None,
               "%s answers (Xen %s)" % (host, (hinfo or {}).get("xen_version", "?")) if err is None
               else "%s: expected its toolstack to answer, got: %s" % (host, err)):
        return checks, facts
    pinfo, err = _safe(find_domain, peer, domain)
    stale = None
    if err is None:
        stale, err = _safe(find_backup_copy, peer, domain)
    if err is None and stale is not None and (pinfo is None or pinfo.domid == stale[0].domid):
        # a Remus backup copy of this domain there, not the domain itself
        sinfo, sb = stale
        if sb.get("state") == "broken":
            facts["stale_backup"] = {"name": sinfo.name, "domid": sinfo.domid, "memory": sinfo.memory or 0,
                                     "checkpoints": sb.get("checkpoints")}
            add("peer-free", True, "%s on %s: a held Remus backup copy (%s, its stream ended; %s committed "
                "checkpoints), judged by stale-backup" % (domain, host, sinfo.name,
                                                          "?" if sb.get("checkpoints") is None else sb["checkpoints"]))
        else:
            add("peer-free", False, "%s: expected no domain of that name on %s, found a Remus backup copy (%s) "
                "still receiving checkpoints: a primary still protects toward %s; stop that protection first"
                % (domain, host, sinfo.name, host))
    else:
        add("peer-free", err is None and pinfo is None,
            "no %s on %s" % (domain, host) if err is None and pinfo is None else
            "%s: expected no domain of that name on %s, found %s" % (domain, host, err or domain_state(pinfo)))
    need = info.memory or 0
    free = hinfo.get("free_memory")
    if facts.get("stale_backup") and free is not None:
        free += facts["stale_backup"]["memory"]     # freed by the discard
    add("peer-memory", free is not None and free >= need,
        "%s has %s MiB free, %s needs %d MiB" % (host, free, domain, need) if free is not None and free >= need
        else "%s: expected >= %d MiB free for %s, got %s MiB" % (host, need, domain, free))
    if mode == "failback" and toolstack.migrates_paused:
        lacks = _safe(toolstack.check_migrate_paused)[0]
        add("migrate-paused", not lacks,
            "migrate can leave the domain paused on arrival" if not lacks else
            "%s (the final disk delta needs the domain paused on arrival); use --reverse-only, or upgrade"
            % lacks)
    if mode == "failback" and not toolstack.migrates_paused:
        lacks, err = _safe(toolstack.check_migrate_hook)
        lacks = lacks if err is None else "cannot tell whether the running toolstack has the migrate hook: %s" % err
        add("migrate-hook", not lacks,
            "the running toolstack sends the final disk delta at device-migrate step 2" if not lacks else lacks)
    config, err = _safe(toolstack.domain_config, domain)
    if err is not None:
        add("remus-disks", False, "%s: cannot read its config: %s" % (domain, err))
        return checks, facts
    facts["config"] = config
    rdisks = config.remus_disks
    if not add("remus-disks", bool(rdisks),
               "%d remus disk(s): %s" % (len(rdisks), ", ".join(d.vdev for d in rdisks)) if rdisks
               else "%s: expected at least one remus disk (tap2:remus:HOST:PORT|aio:PATH), got none" % domain):
        return checks, facts
    if replicate is not None:
        add(*check_replicated(replicate, rdisks, toolstack if mode == "protect" else peer))
        for where, ts in (("this host", toolstack), (host, peer)):
            served = check_served(replicate, rdisks, ts, where)
            if served is not None:
                add(*served)
    if memory_only:
        for disk in rdisks:
            add(*check_memory_only(disk, accept_disk_loss, shared_disks,
                                   replicated=replicate.vdev if replicate is not None else None))
    for disk, src, dest in disk_pairs(config):
        if mode == "protect":
            facts["disks"].append(_check_backup_copy(add, disk, src, dest, disk_sync, discard_peer, host))
            continue
        rel, err = _safe(disk_sync.relation, src, dest)
        if err is not None:
            add("generation:%s" % disk.vdev, False, "%s: cannot compare generations with %s: %s"
                % (disk.vdev, dest, err))
        elif rel in SAFE_RELATIONS:
            add("generation:%s" % disk.vdev, True, "peer copy %s is %s" % (dest, rel))
        elif discard_peer:
            add("generation:%s" % disk.vdev, True, "peer copy %s is %s; DISCARDING its own writes as asked"
                % (dest, rel))
        else:
            add("generation:%s" % disk.vdev, False,
                "%s: expected the peer's copy %s to be an ancestor of ours, got %s: %s; refusing "
                "(name the peer's copy as the loser with --discard-peer)"
                % (disk.vdev, dest, rel, "split brain" if rel == "split-brain" else "not a plain failback"))
        size, err = _safe(disk_sync.size, src)
        psize, perr = _safe(disk_sync.peer_size, dest)
        if err is not None:
            add("size:%s" % disk.vdev, False, "%s: cannot read %s: %s" % (disk.vdev, src, err))
        elif perr is not None or psize is None:
            add("size:%s" % disk.vdev, True, "%d bytes here; the peer's size is checked by the resync" % size)
        else:
            add("size:%s" % disk.vdev, psize == size,
                "%d bytes on both" % size if psize == size else
                "%s: expected the peer's copy to have %d bytes, got %d" % (disk.vdev, size, psize))
        facts["disks"].append({"vdev": disk.vdev, "path": disk.path, "src": src, "dest": dest,
                               "relation": rel, "size": size})
    if backup is None:
        add("direction", False, "%s: cannot tell this host's address for the peer; give --local-host" % domain)
    else:
        try:
            _cfg, changed = plan_direction(config, backup, backup_aliases)
        except FailbackError as exc:
            add("direction", False, str(exc))
        else:
            facts["direction"] = changed
            # refused now rather than with the domain paused at the protect
            # step: a toolstack may be unable to re-point disks at all, or
            # lack what it needs for it (xend: tap-ctl and xenstore)
            lacks = retarget_ts.check_retarget() if changed else None
            if lacks:
                add("direction", False, "%s: disks %s replicate elsewhere than %s and cannot be re-pointed "
                    "here: %s; if their uname names %s by another address, give it with --local-host"
                    % (domain, ", ".join(changed), backup, lacks, backup))
            else:
                add("direction", True, "remus disks replicate to %s%s" % (
                    backup, "; reversing %s" % ", ".join(changed) if changed else ""))
    if config_file:
        add(*check_config_file(config_file, backup, backup_aliases))
    if facts.get("stale_backup"):
        add(*check_stale_backup(peer, domain, host, facts["stale_backup"], config, checks, discard_peer))
    return checks, facts


def is_drbd(disk):
    """The disk is a DRBD device (``drbd:`` uname, or a /dev/drbd* path)."""
    return disk.uname.startswith("drbd:") or "/dev/drbd" in (disk.path or "")


def check_replicated(replicate, rdisks, sender_ts):
    """``--replicate-disk``: the named disk is one of the domain's writable
    disks, and the toolstack that will run Remus can start its relay.
    :returns: ``(name, ok, detail)``"""
    name = "replicate-disk:%s" % replicate.vdev
    if replicate.vdev not in [d.vdev for d in rdisks]:
        return name, False, ("%s: expected it among the domain's writable disks (%s)"
                             % (replicate.vdev, ", ".join(d.vdev for d in rdisks) or "none"))
    lacks = sender_ts.check_replicate()
    if lacks:
        return name, False, "%s: %s" % (replicate.vdev, lacks)
    return name, True, ("%s replicated checkpoint by checkpoint by xen-remus replicate (control %s)"
                        % (replicate.vdev, replicate.control))


def _dev_name(path):
    return (path or "").rstrip("/").rsplit("/", 1)[-1]


def check_served(replicate, rdisks, ts, where):
    """The replicated disk's device is served on ``where`` (``ts``'s host)
    by a ``xen-remus replicate serve`` with the disk's control socket: the
    relay needs it where the domain runs, and the backup's copy of the
    domain opens the same device there.  :returns: ``(name, ok, detail)``,
    or None when ``ts`` cannot tell (or the disk is not the domain's)."""
    disk = [d for d in rdisks if d.vdev == replicate.vdev]
    if not disk:
        return None
    dev = disk[0].path
    name = "replicate-served:%s@%s" % (replicate.vdev, "here" if where == "this host" else where)
    try:
        served = ts.served_devices()
    except XenRemusError as exc:
        return name, False, ("%s: cannot ask %s which disks xen-remus replicate serve serves: %s"
                             % (replicate.vdev, where, exc))
    if served is None:
        return None
    for rec in served:
        if rec.get("control") == replicate.control and _dev_name(rec.get("device")) == _dev_name(dev):
            return name, True, "%s serves %s on %s (control %s)" % (where, rec.get("image"), dev, replicate.control)
    found = ", ".join("%s on %s (control %s)" % (r.get("image"), r.get("device") or "no device", r.get("control"))
                      for r in served) or "none"
    return name, False, ("%s: expected %s to serve its copy of the disk on %s with control socket %s "
                         "(xen-remus replicate attach IMAGE --device %s there), found: %s"
                         % (replicate.vdev, where, dev, replicate.control, dev, found))


def check_memory_only(disk, accept_disk_loss, shared_disks=(), replicated=None):
    """Memory-only Remus (xl remus -d) leaves the backup's copy of a writable
    disk behind: a failover then resumes on a disk lacking every write made
    since protection began.  Refused unless the disk is DRBD (which must run
    protocol D), shared, or the operator accepted the loss by name.

    :returns: ``(name, ok, detail)``
    """
    name = "disk-replication:%s" % disk.vdev
    if disk.vdev == replicated:
        return name, True, ("%s: its writes reach the backup with each checkpoint (xen-remus replicate)"
                            % disk.vdev)
    if disk.vdev in shared_disks:
        return name, True, "%s on shared storage (--shared-disk): nothing to replicate" % disk.vdev
    if is_drbd(disk):
        return name, True, "%s is DRBD: its resource must use protocol D for Remus" % disk.vdev
    if accept_disk_loss:
        return name, True, ("%s: memory-only Remus; a failover LOSES the writes since protection began "
                            "(accepted with --lose-disk-writes-at-failover)" % disk.vdev)
    return name, False, ("%s: memory-only Remus (xl remus -d) does not replicate this disk: a failover would "
                         "resume the backup on a copy lacking every write acknowledged since protection began; "
                         "refusing (use shared storage or DRBD protocol D, name a shared disk with "
                         "--shared-disk, or accept the loss with --lose-disk-writes-at-failover)" % disk.vdev)


def _check_backup_copy(add, disk, src, dest, disk_sync, discard_peer, host):
    """``protect``: the backup's copy of ``disk`` is absent (seeded as a sparse
    image), or an ancestor of ours by generation, and never a copy with
    writes of its own unless ``discard_peer`` names it the loser.
    :returns: the disk's facts."""
    size, err = _safe(disk_sync.size, src)
    fact = {"vdev": disk.vdev, "path": disk.path, "src": src, "dest": dest, "relation": None, "size": size,
            "create": False}
    if err is not None:
        add("size:%s" % disk.vdev, False, "%s: cannot read %s: %s" % (disk.vdev, src, err))
        return fact
    state, err = _safe(disk_sync.peer_state, dest)
    name = "backup-copy:%s" % disk.vdev
    if err is not None:
        add(name, False, "%s: cannot inspect the backup's copy %s: %s" % (disk.vdev, dest, err))
        return fact
    if not state["exists"]:
        fact["create"] = True
        fact["relation"] = "absent"
        add(name, True, "%s absent on %s: it will be created sparse, %d bytes, and seeded" % (dest, host, size))
        return fact
    if state.get("size") is not None and state["size"] != size:
        add("size:%s" % disk.vdev, False, "%s: expected the backup's copy %s to have %d bytes, got %d"
            % (disk.vdev, dest, size, state["size"]))
    else:
        add("size:%s" % disk.vdev, True, "%d bytes on both" % size)
    if state.get("in_use"):
        add("unused:%s" % disk.vdev, False, "%s: expected the backup's copy %s unused, got: %s"
            % (disk.vdev, dest, state["in_use"]))
    rel, err = _safe(disk_sync.relation, src, dest)
    fact["relation"] = rel
    if err is not None:
        add(name, False, "%s: cannot compare generations with %s: %s" % (disk.vdev, dest, err))
    elif state.get("meta") is None:
        fact["relation"] = rel = "no-record"
        add(name, discard_peer, "%s exists without a generation record: DISCARDING what it holds as asked"
            % dest if discard_peer else
            "%s: expected the backup's copy %s absent or with a generation record, found a copy with none: "
            "it may hold writes of its own; refusing (name it the loser with --discard-peer)"
            % (disk.vdev, dest))
    elif rel in SAFE_RELATIONS:
        add(name, True, "backup copy %s is %s" % (dest, rel))
    else:
        add(name, discard_peer, "backup copy %s is %s; DISCARDING its own writes as asked" % (dest, rel)
            if discard_peer else
            "%s: expected the backup's copy %s to be an ancestor of ours, got %s: it holds writes of its "
            "own; refusing (name it the loser with --discard-peer)" % (disk.vdev, dest, rel))
    return fact


def check_config_file(path, backup, aliases=()):
    """The domain's config file (what the next ``xm create`` reads) names
    the backup, or reverses cleanly to name it (config/reverse.py).

    :returns: ``(name, ok, detail)``
    """
    from xen_remus_ext import config as config_pkg
    from xen_remus_ext.config import reverse
    try:
        cfg = config_pkg.load(path)
        _cfg, changed = plan_direction(cfg, backup, aliases)
        if not changed:
            return "config-file", True, "%s names %s already" % (path, backup)
        reverse.reverse_text(config_pkg.read_file(path), None, backup, path=path)
    except (XenRemusError, IOError, OSError) as exc:
        return "config-file", False, "%s: expected it to reverse cleanly toward %s, got: %s" % (path, backup, exc)
    return "config-file", True, "%s reverses cleanly (%s -> %s); run `xen-remus config reverse` on it" % (
        path, ", ".join(changed), backup)


def raise_failed(checks, state):
    bad = [c for c in checks if not c.ok]
    if bad:
        raise FailbackError("preflight refused: " + "; ".join(c.detail for c in bad),
                            state=state, step="preflight")

