"""A stateful toolstack double, in the manner of nova's fakelibvirt.

``FakeWorld`` holds every host's domains and disk files (real files under a
directory per host); ``FakeToolstack(world, host)`` implements
``ports.Toolstack`` for one host.  It stands in for xend/xl on a host: the
calls and their effects follow docs/xen-facts.md (migrate moves memory only, never
disks; ``paused=True`` is ``xl migrate -p``; Remus leaves a paused copy on the
backup while it runs).

Fault injection:

* ``world.kill_at = N``: the N-th effect (every state change counts, and a
  migration has two: the incoming copy appears, then the source goes) raises
  :class:`Killed` (a BaseException, as SIGKILL would end the process) right
  AFTER it happened, so the orchestrator dies mid-step with the world changed.
* ``world.hold_migrations = True``: ``migrate`` creates the paused incoming
  copy and returns; the test then calls ``complete_migration(dom)`` or
  ``fail_migration(dom)`` (fakelibvirt's hooks).
"""
from __future__ import absolute_import, division, print_function

import os

from xen_remus_ext import model
from xen_remus_ext.errors import ToolstackError, XenRemusError
from xen_remus_ext.ports import DiskSync, Toolstack, Tracker

SECTOR = 512


class Killed(BaseException):
    """The orchestrator process 'died' here (not an Exception: nothing catches it)."""


class FakeDomain(object):
    def __init__(self, name, domid, config, state="running", remus_backup=False):
        self.name = name
        self.domid = domid
        self.config = config
        self.state = state
        self.remus_backup = remus_backup
        self.hold = False          # a backup copy: held paused when its stream breaks
        self.broken = False        # a backup copy whose stream broke


class FakeTracker(Tracker):
    """Records the extents written through :meth:`FakeWorld.guest_write`,
    with the sim tracker's semantics: nothing before :meth:`mark`; ``clear``
    forgets only what the last :meth:`dirty_extents` reported."""

    name = "fake"

    def __init__(self):
        self.extents = []   # [(seq, offset, length)]
        self.marked = False
        self.trusted = True
        self.seq = 0
        self.reported = 0

    def note(self, offset, length):
        if self.marked:
            self.seq += 1
            self.extents.append((self.seq, offset, length))

    def trustworthy(self):
        return self.marked and self.trusted

    def mark(self):
        self.extents = []
        self.marked = True

    def dirty_extents(self):
        self.reported = self.seq
        out = []
        for off, length in sorted((o, n) for _s, o, n in self.extents):
            if out and off <= out[-1][0] + out[-1][1]:
                end = max(out[-1][0] + out[-1][1], off + length)
                out[-1] = (out[-1][0], end - out[-1][0])
            else:
                out.append((off, length))
        return [model.Extent(o, n) for o, n in out]

    def clear(self):
        self.extents = [e for e in self.extents if e[0] > self.reported]


class FakeWorld(object):
    def __init__(self, root, hosts=("hostA", "hostB"), free_memory=4096):
        self.root = str(root)
        self.hosts = {}
        self.free_memory = {}
        self.remus = {}           # (host, dom) -> backup host
        self.replicated = {}      # (host, dom) -> model.ReplicatedDisk its Remus carries (kind "xl")
        self.served = {}          # (host, dom) -> {vdev: control}: disks `replicate serve` serves there
        self.served_devices = {}  # host -> [{device, image, control}] (absent: the host cannot tell)
        self.trackers = {}        # (host, dom, vdev) -> FakeTracker
        self.unreachable = set()
        self.effects = 0
        self.kill_at = None
        self.hold_migrations = False
        self.on_effect = None     # called after every effect (a guest writing meanwhile)
        self.migrate_hook = None  # xend's device-migrate step 2, for kind="xend"
        self.log = []
        self._next_domid = 1
        for h in hosts:
            self.hosts[h] = {}
            self.free_memory[h] = free_memory
            os.makedirs(os.path.join(self.root, h))

    # -- effects ----------------------------------------------------------
    def effect(self, what):
        self.effects += 1
        self.log.append(what)
        if self.on_effect is not None:
            self.on_effect(what)
        if self.kill_at is not None and self.effects == self.kill_at:
            self.kill_at = None
            raise Killed("killed after effect %d (%s)" % (self.effects, what))

    # -- disks --------------------------------------------------------------
    def disk_file(self, host, path):
        return os.path.join(self.root, host, path.lstrip("/"))

    def make_disk(self, host, path, size, fill=b"\0"):
        fn = self.disk_file(host, path)
        d = os.path.dirname(fn)
        if not os.path.isdir(d):
            os.makedirs(d)
        with open(fn, "wb") as f:
            f.write(fill * size)
        return fn

    def read_disk(self, host, path):
        with open(self.disk_file(host, path), "rb") as f:
            return f.read()

    def where(self, dom):
        """:returns: hosts where ``dom`` runs (not a Remus backup copy)."""
        return sorted(h for h, doms in self.hosts.items()
                      if dom in doms and not doms[dom].remus_backup)

    def guest_write(self, dom, offset, data):
        """The guest writes ``data`` at ``offset`` of its first remus disk."""
        hosts = [h for h in self.where(dom) if self.hosts[h][dom].state == "running"]
        if len(hosts) != 1:
            raise ToolstackError("%s: expected to run on exactly one host, runs on %r" % (dom, hosts))
        host = hosts[0]
        if getattr(self.hosts[host][dom], "awaiting_backup", False):
            raise ToolstackError("%s: write held: block-remus waits for the backup to connect" % dom)
        disk = self.hosts[host][dom].config.remus_disks[0]
        with open(self.disk_file(host, disk.path), "r+b") as f:
            f.seek(offset)
            f.write(data)
        tr = self.trackers.get((host, dom, disk.vdev))
        if tr is not None:
            tr.note(offset, len(data))
        backup = self.remus.get((host, dom))
        if backup is not None:  # Remus mirrors the write (committed at once here)
            with open(self.disk_file(backup, disk.path), "r+b") as f:
                f.seek(offset)
                f.write(data)
        return host

    def break_stream(self, host, dom):
        """The primary ``host`` of ``dom`` dies: its Remus stream ends.  The
        backup copy resumes by itself, or waits paused when it is held."""
        backup = self.remus.pop((host, dom), None)
        if backup is None:
            raise ToolstackError("%s@%s: expected Remus running, got none" % (dom, host))
        self.hosts[host].pop(dom, None)
        copy = self.hosts[backup][dom]
        copy.broken = True
        if not copy.hold:
            copy.remus_backup = False
            copy.state = "running"
        self.effect("stream of %s broke; copy on %s %s" % (dom, backup, "held" if copy.hold else "resumed"))
        return backup

    # -- domains ------------------------------------------------------------
    def create(self, host, config, state="running", remus_backup=False):
        dom = FakeDomain(config.name, self._next_domid, config, state, remus_backup)
        self._next_domid += 1
        self.hosts[host][config.name] = dom
        return dom


def remus_config(name, backup, path="/img/%s.img", port=9000, memory=256, vdev="xvda"):
    path = path % name if "%s" in path else path
    uname = "tap2:remus:%s:%d|aio:%s" % (backup, port, path)
    disk = model.DiskSpec(uname, vdev, "w", remus=model.RemusSpec(backup, port, "aio", path))
    return model.DomainConfig(name=name, memory=memory, disks=[disk], format="xm")


class FakeToolstack(Toolstack):
    """One host's toolstack.  ``kind="xend"`` follows xend's migration: the
    domain cannot stay paused on arrival; the device-migrate hook
    (``world.migrate_hook(domname, dst)``, xend's external-migration-tool at
    step 2) runs while the source is suspended; the domain then runs on the
    destination, and block-remus holds its writes until the backup connects
    (docs/xen-facts.md section 5: the primary's first write blocks on connect)."""

    kind = "sim"

    def __init__(self, world, host, kind="sim"):
        self.world = world
        self.host = host
        self.kind = kind
        self.migrates_paused = kind != "xend"

    # -- helpers --------------------------------------------------------------
    def _doms(self):
        if self.host in self.world.unreachable:
            raise ToolstackError("%s: expected a reachable toolstack, got no answer" % self.host)
        return self.world.hosts[self.host]

    def _get(self, dom):
        doms = self._doms()
        for d in doms.values():
            if dom == d.name or dom == d.domid or dom == str(d.domid):
                return d
        raise ToolstackError("domain %r: expected it on %s, not found" % (dom, self.host))

    # -- ports.Toolstack ----------------------------------------------------
    def list_domains(self):
        out = [model.DomainInfo(0, "Domain-0", "r-----", 1024, self.host)]
        for d in sorted(self._doms().values(), key=lambda x: x.domid):
            out.append(self._info(d))
        return out

    def _info(self, d):
        return model.DomainInfo(d.domid, d.name, "--p---" if d.state == "paused" else "-b----",
                                d.config.memory or 0, self.host)

    def domain_info(self, dom):
        return self._info(self._get(dom))

    def domain_config(self, dom):
        return self._get(dom).config

    def host_info(self):
        self._doms()
        return {"free_memory": self.world.free_memory[self.host], "xen_version": "4.4.4", "host": self.host}

    def pause(self, dom):
        d = self._get(dom)
        if d.state != "paused":
            d.state = "paused"
            self.world.effect("pause %s@%s" % (d.name, self.host))

    def unpause(self, dom):
        d = self._get(dom)
        if d.state != "running":
            d.state = "running"
            self.world.effect("unpause %s@%s" % (d.name, self.host))

    def migrate(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None):
        d = self._get(dom)
        if dst not in self.world.hosts or dst in self.world.unreachable:
            raise ToolstackError("migrate %s: expected a reachable destination, got %r" % (d.name, dst))
        if d.name in self.world.hosts[dst]:
            raise ToolstackError("migrate %s: a domain of that name already exists on %s" % (d.name, dst))
        cfg = config if config is not None else d.config
        name = d.name
        if self.kind == "xend":
            if paused:
                raise ToolstackError("xend migrate: no way to leave %s paused on arrival" % d.name)
            # XendCheckpoint.save names the source migrating-NAME for the whole save
            self._rename(d, "migrating-" + name)
            d.state = "paused"      # suspended for the last round
            self.world.effect("suspend %s@%s" % (name, self.host))
        incoming = self.world.create(dst, cfg, state="paused")
        incoming.final_state = "paused" if paused else "running"
        if self.kind == "xend":   # its remus tapdisk (primary) exists before the domain can run
            incoming.awaiting_backup = bool(cfg.remus_disks)
        self.world.effect("incoming %s@%s" % (name, dst))
        if self.kind == "xend":
            if self.world.migrate_hook is not None:
                try:
                    self.world.migrate_hook(name, dst)
                except XenRemusError:   # xend: a failing hook fails the migration, source resumes
                    self.fail_migration(name, dst)
                    d.state = "running"
                    raise
        if self.world.hold_migrations:
            return
        self.complete_migration(name, dst)

    def _rename(self, d, name):
        doms = self._doms()
        del doms[d.name]
        d.name = name
        doms[name] = d

    def migrating_away(self, dom):
        d = self._doms().get("migrating-%s" % dom)
        return self._info(d) if d is not None else None

    def complete_migration(self, dom, dst=None):
        dst = dst or [h for h in self.world.hosts if h != self.host][0]
        incoming = self.world.hosts[dst][dom]
        del self.world.hosts[self.host][dom if dom in self.world.hosts[self.host] else "migrating-" + dom]
        incoming.state = getattr(incoming, "final_state", "paused")
        self.world.effect("migrated %s %s->%s" % (dom, self.host, dst))

    def fail_migration(self, dom, dst=None):
        dst = dst or [h for h in self.world.hosts if h != self.host][0]
        del self.world.hosts[dst][dom]
        src = self.world.hosts[self.host].get("migrating-" + dom)
        if src is not None:       # xend names the source back when the save fails
            self._rename(src, dom)
        self.world.effect("migration failed %s" % dom)

    def destroy(self, dom):
        d = self._get(dom)
        del self._doms()[d.name]
        self.world.remus.pop((self.host, d.name), None)
        self.world.replicated.pop((self.host, d.name), None)
        self.world.effect("destroy %s@%s" % (d.name, self.host))

    def check_replicate(self):
        if self.kind == "xl":
            return None
        return Toolstack.check_replicate(self)

    def served_devices(self):
        self._doms()
        if self.kind != "xl" or self.host not in self.world.served_devices:
            return None
        return list(self.world.served_devices[self.host])

    def served_disks(self, dom):
        d = self._get(dom)
        return dict(self.world.served.get((self.host, d.name), {})) if self.kind == "xl" else {}

    def remus_start(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                    blackhole=False, unsafe=False, hold=False, replicate=None):
        d = self._get(dom)
        if replicate is not None:
            if self.check_replicate():
                raise ToolstackError("remus %s: %s" % (d.name, self.check_replicate()))
            if disk:
                raise ToolstackError("remus %s: a replicated disk runs under memory-only Remus (disk=False)"
                                     % d.name)
            if replicate.vdev not in [x.vdev for x in d.config.disks]:
                raise ToolstackError("remus %s: no disk %s to replicate" % (d.name, replicate.vdev))
        if host not in self.world.hosts or host in self.world.unreachable:
            raise ToolstackError("remus %s: backup %r unreachable" % (d.name, host))
        if (self.host, d.name) in self.world.remus:
            return
        for rd in d.config.remus_disks:
            if rd.remus.host != host:
                raise ToolstackError("remus %s: disk %s replicates to %s, not to the backup %s"
                                     % (d.name, rd.vdev, rd.remus.host, host))
        if d.name in self.world.hosts[host]:
            raise ToolstackError("remus %s: %s already has a domain of that name" % (d.name, host))
        copy = self.world.create(host, d.config, state="paused", remus_backup=True)
        copy.hold = bool(hold)
        self.world.effect("remus backup copy %s@%s" % (d.name, host))   # checkpoint 0 not yet done
        self.world.remus[(self.host, d.name)] = host
        if replicate is not None:
            self.world.replicated[(self.host, d.name)] = replicate
        d.awaiting_backup = False
        self.world.effect("remus %s %s->%s" % (d.name, self.host, host))

    def remus_stop(self, dom):
        d = self._get(dom)
        backup = self.world.remus.pop((self.host, d.name), None)
        self.world.replicated.pop((self.host, d.name), None)
        if backup is not None:
            self.world.hosts[backup].pop(d.name, None)
            self.world.effect("remus stop %s" % d.name)

    def remus_running(self, dom):
        self._doms()
        return (self.host, dom) in self.world.remus

    def check_retarget(self):
        return None

    def remus_backup(self, dom):
        """A Remus backup's copy here: receiving checkpoints, or broken (held);
        the fake counts none."""
        d = self._get(dom)
        if not d.remus_backup:
            return None
        return {"state": "broken" if d.broken else "receiving", "checkpoints": None}

    def check_hold(self):
        return None

    def hold_on_stream_break(self, hold=True):
        """Holds are asked per stream here (``remus_start(hold=True)``)."""

    def remus_takeover(self, dom):
        d = self._get(dom)
        if not (d.remus_backup and d.broken):
            raise ToolstackError("takeover %s@%s: expected a held backup copy whose stream broke"
                                 % (d.name, self.host))
        d.remus_backup = False
        d.state = "running"
        self.world.effect("takeover %s@%s" % (d.name, self.host))

    def remus_discard(self, dom):
        d = self._get(dom)
        if not d.remus_backup:
            raise ToolstackError("discard %s@%s: expected a backup copy, got the domain itself"
                                 % (d.name, self.host))
        for key, backup in list(self.world.remus.items()):
            if key[1] == d.name and backup == self.host:
                del self.world.remus[key]       # the primary runs on unprotected
        self.world.hosts[self.host].pop(d.name)
        self.world.effect("discard %s@%s" % (d.name, self.host))

    def retarget_disks(self, dom, config):
        """Re-point the paused domain's remus disks (tap-ctl pause/unpause -a)."""
        d = self._get(dom)
        if d.state != "paused":
            raise ToolstackError("retarget %s: expected a paused domain, got %s" % (d.name, d.state))
        d.config = config
        self.world.effect("retarget %s@%s" % (d.name, self.host))

    def save(self, dom, path, checkpoint=False):
        raise ToolstackError("save: not modelled by the fake")

    def restore(self, path, paused=False):
        raise ToolstackError("restore: not modelled by the fake")

    # -- simulator extras the orchestrator uses ------------------------------
    def tracks_writes(self):
        return True

    def tracker_for(self, dom, vdev):
        """An unmarked tracker (as the simulator's: it records after mark())."""
        self._get(dom)
        tr = FakeTracker()
        self.world.trackers[(self.host, dom, vdev)] = tr
        return tr

    def disk_path(self, path):
        return self.world.disk_file(self.host, path)


class FileDiskSync(DiskSync):
    """A ``ports.DiskSync`` over plain local files.

    It copies, really: the tracker's extents when given one, else every
    64 KiB block that differs.  ``relations`` maps a destination path to the
    generation relation to report (default ``target-behind``), for split-brain
    tests; the resync engine proper has its own tests.  Each sync is one
    world effect, so a kill can land between two disks or two passes.
    """

    BLOCK = 64 * 1024

    def __init__(self, world=None):
        self.world = world
        self.relations = {}
        self.calls = []

    def relation(self, src, dest):
        return self.relations.get(dest, "target-behind")

    def size(self, path):
        return os.path.getsize(path)

    def peer_size(self, dest):
        return os.path.getsize(dest) if os.path.exists(dest) else None

    def sync(self, src, dest, tracker=None, rate=None, verify=False, discard_target=False,
             final=False, events=None):
        rel = self.relations.get(dest, "target-behind")
        if rel not in ("identical", "target-behind", "target-new") and not discard_target:
            raise ToolstackError("resync %s -> %s: refused, %s" % (src, dest, rel))
        sent = read = 0
        with open(src, "rb") as fs, open(dest, "r+b") as fd:
            if tracker is not None:
                ranges = [(e.offset, e.length) for e in tracker.dirty_extents()]
            else:
                size = os.path.getsize(src)
                ranges = [(o, min(self.BLOCK, size - o)) for o in range(0, size, self.BLOCK)]
            for off, length in ranges:
                fs.seek(off)
                data = fs.read(length)
                read += len(data)
                if tracker is None:
                    fd.seek(off)
                    if fd.read(length) == data:
                        continue
                fd.seek(off)
                fd.write(data)
                sent += len(data)
        self.calls.append((src, dest, "tracked" if tracker is not None else "checksum", final))
        if self.world is not None:
            self.world.effect("sync %s -> %s%s" % (src, dest, " (final)" if final else ""))
        return {"mode": "tracked" if tracker is not None else "checksum", "bytes_read": read,
                "bytes_sent": sent, "extents": len(ranges), "seconds": 0.001, "verified": False}
