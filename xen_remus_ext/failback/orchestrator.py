"""The failback runner: executes machine.py's plan through the ports.

Each step is idempotent and journaled around (journal.py): before it runs the
journal names it in ``step``; after it succeeds the journal takes the next
state.  A run (fresh, rerun or ``--resume``) first OBSERVES the world (where
the domain runs and whether it is paused, Remus senders, and the journal's
own record of the final delta, which the xend migration hook may have
written), lets :func:`machine.reconcile` pick the state to continue from,
performs the cleanup actions it asks for, and only then runs steps.

Where the disks are: the domain's config's remus disks.  The local copy is
``toolstack.disk_path(p)`` when the toolstack maps paths (simulator), else
``p``; the peer's copy is ``peer_toolstack.disk_path(p)`` likewise (a local
file: simulator, tests), else ``options["dest_template"] % {host, path,
vdev}`` (default ``HOST:PATH``: the resync engine's ssh transport).

The migration: a toolstack whose ``migrate(paused=True)`` leaves the domain
paused on arrival (xl, the simulator) gets the final delta from this runner
while the domain is paused there; one that cannot (``migrates_paused`` is
False: xend) gets it from the device-migrate hook while the domain is
suspended, and the runner adopts the hook's journal record.

Downtime: the runner records ``timing`` for every step and ``downtime`` =
end of unpause - end of migrate (the part failback adds) plus the
toolstack's own stop-and-copy time when it reports one
(``migration_downtime()``).
"""
from __future__ import absolute_import, division, print_function

import logging

import six

from xen_remus_ext.errors import FailbackError, ToolstackError, XenRemusError
from xen_remus_ext.failback import journal, machine, preflight
from xen_remus_ext.failback import options as options_mod
from xen_remus_ext.failback.disks import send_final_delta, sync_waiting
from xen_remus_ext.model import ReplicatedDisk
from xen_remus_ext.ports import SystemClock

LOG = logging.getLogger(__name__)

#: the options and their defaults (failback/options.py)
DEFAULTS = dict(options_mod.DEFAULTS)


class Orchestrator(object):
    """Runs (or resumes, or aborts) one domain's failback.

    :param toolstack: this host's :class:`ports.Toolstack` (the domain runs here).
    :param peer_toolstack: the peer's (``host``, the original primary); None
        only for :meth:`disk_pairs` of a resync toward a real host.
    :param mode: ``machine.FAILBACK`` or ``machine.REVERSE``.
    :param disk_sync: the :class:`ports.DiskSync` of the disks.
    :param progress: callable taking one line of text for the user.
    :param xenstore: this host's :class:`ports.XenStore` (optional), and
        ``peer_xenstore`` the peer's: the run keeps the domain's remus-ext
        status keys (status_keys.py) up to date there, for remus-status.
    """

    def __init__(self, toolstack, peer_toolstack, domain, host, mode=machine.FAILBACK, options=None,
                 disk_sync=None, clock=None, state_base=None, progress=None, xenstore=None, peer_xenstore=None):
        machine.check_mode(mode)
        self.ts = toolstack
        self.peer = peer_toolstack
        self.domain = domain
        self.host = host
        self.mode = mode
        self.opts = options_mod.FailbackOptions.from_dict(options)
        if disk_sync is None:
            raise FailbackError("%s: expected a disk port (DiskSync), got none" % (domain,))
        self.disks = disk_sync
        self.clock = clock or SystemClock()
        self.base = state_base
        self.progress = progress or (lambda line: LOG.info("%s", line))
        self.rec = None
        self._trackers = {}
        self.xs = xenstore
        self.peer_xs = peer_xenstore
        if not self.opts.disk:
            self._memory_only()

    # -- world --------------------------------------------------------------
    def local_host(self):
        if self.opts.local_host:
            return self.opts.local_host
        try:
            return self.ts.host_info().get("host")
        except ToolstackError:
            return None

    def backup_host(self):
        """Where Remus protects toward once done."""
        return self.local_host() if self.mode == machine.FAILBACK else self.host

    def backup_aliases(self):
        """Every name and address the backup host is known by (remus unames
        may name it by address)."""
        ts = self.ts if self.mode == machine.FAILBACK else self.peer
        out = set([self.backup_host()])
        try:
            info = ts.host_info()
        except ToolstackError:
            return out
        for key in ("host", "addr", "name"):
            if info.get(key):
                out.add(info[key])
        if info.get("addr") and info.get("remus_port"):
            # the simulator without namespaces: every host on 127.0.0.1, each
            # with its own block-remus port, so the address alone names no host
            out.discard(info["addr"])
            out.add("%s:%s" % (info["addr"], info["remus_port"]))
        return out

    def disk_pairs(self, config):
        out = []
        for d in config.remus_disks:
            src = self.ts.disk_path(d.path) or d.path
            dest = self.peer.disk_path(d.path) if self.peer is not None else None
            if dest is None:
                dest = self.opts.dest_template % {"host": self.host, "path": d.path, "vdev": d.vdev}
            out.append((d, src, dest))
        return out

    def tracker(self, vdev, start=False):
        """The dirty-block tracker of ``vdev`` held by THIS run, if any.

        A tracker records from its mark on, and its mark lives in this
        process; so ``start=True`` (the pre-copy) marks a new one, and a
        resumed run that did not mark one finds none (the final pass then
        compares checksums: slower, still exact).
        """
        if not start:
            return self._trackers.get(vdev)
        try:
            kind, why = self.tracker_choice(vdev)
            if kind is None:
                return None
            tr = self.ts.tracker_for(self.domain, vdev)
            if tr is None:
                return None
            tr.mark()
        except XenRemusError as exc:
            LOG.warning("%s %s: no dirty-block tracker (%s); checksums instead", self.domain, vdev, exc)
            return None
        self._trackers[vdev] = tr
        return tr

    def tracker_choice(self, vdev):
        """``(tracker name or None, why)`` for ``vdev``, from the toolstack."""
        try:
            return self.ts.tracker_choice(self.domain, vdev)
        except XenRemusError as exc:
            return None, "cannot tell (%s)" % exc

    def observe(self):
        here = preflight.find_domain(self.ts, self.domain)
        if here is None and self.mode == machine.FAILBACK:
            here = self.ts.migrating_away(self.domain)   # still here, under xend's migrating- name
        local = preflight.domain_state(here)
        try:
            pinfo = preflight.find_domain(self.peer, self.domain)
            if pinfo is not None and here is not None and self._held_copy(pinfo):
                # a Remus backup copy there (held since its stream ended, or
                # still receiving), not the domain: preflight judges it
                # (peer-free, stale-backup) and discards only a provably stale one
                pinfo = None
            peer = preflight.domain_state(pinfo)
        except ToolstackError as exc:
            raise FailbackError("peer %s: expected its toolstack to answer while observing, got: %s"
                                % (self.host, exc), state=self.rec and self.rec["state"], step="observe")
        local_remus = bool(local) and self.ts.remus_running(self.domain)
        peer_remus = bool(peer) and self.peer.remus_running(self.domain)
        if peer_remus:
            local = None   # what is here is the Remus backup's copy
        if local_remus:
            peer = None
        if self.rec is not None and self.mode == machine.FAILBACK and not self.ts.migrates_paused:
            self._adopt_hook_delta()     # the xend hook records its final delta in the journal file
        rec = self.rec or {}
        obs = machine.Observation(local, peer, local_remus, peer_remus,
                                  journal.delta_of(rec).sent if rec else False)
        LOG.debug("%s: observed %r", self.domain, obs)
        return obs

    def _held_copy(self, pinfo):
        try:
            b = self.peer.remus_backup(pinfo.name)
        except ToolstackError:
            return False
        return b is not None

    # -- journal --------------------------------------------------------------
    def _save(self):
        self.rec["updated"] = self.clock.now()
        journal.save(self.rec, self.base)

    def _finished(self, rec):
        """A journal of a finished run whose result still stands (the domain is
        not back here): rerunning it is a no-op, not a new failback."""
        if rec is None or rec["state"] != machine.DONE or rec["host"] != self.host or rec["mode"] != self.mode:
            return False
        self.rec = rec
        obs = self.observe()
        if self.mode == machine.FAILBACK:
            return obs.local is None and obs.peer is not None
        return obs.local is not None and obs.local_remus

    def _open(self, resume):
        rec = journal.load(self.domain, self.base)
        last = rec
        if rec is not None and rec["state"] in machine.TERMINAL:
            rec = None
        if rec is None:
            if resume:
                refused = last is not None and last["state"] == machine.REFUSED
                raise FailbackError("%s: --resume: expected an unfinished %s at %s, found %s"
                                    % (self.domain, machine.journal_name(self.mode),
                                       journal.journal_path(self.domain, self.base),
                                       "a run its preflight refused (%s): nothing to resume, run it again "
                                       "without --resume" % last.get("error") if refused else "none"))
            self._find_replicated()
            rec = journal.new_record(self.domain, self.host, self.mode, self.local_host(),
                                     self.ts.kind, self._journal_opts(), self.clock.now())
        else:
            if rec["host"] != self.host or rec["mode"] != self.mode:
                raise FailbackError(
                    "%s: an unfinished %s toward %s is journaled (state %s); expected %s toward %s: "
                    "resume that one or --abort it first"
                    % (self.domain, rec["mode"], rec["host"], rec["state"], self.mode, self.host),
                    state=rec["state"])
            self._adopt_replicated(rec)
            journal.note(rec, self.clock.now(), "resumed", rec["state"], rec.get("step"))
        self.rec = rec
        return rec

    # -- the replicated disk (xen-remus replicate) ------------------------------
    def _memory_only(self):
        for ts in (self.ts, self.peer):
            if ts is not None:
                ts.use_memory_only()

    def _set_replicated(self, rep):
        opts = dict(self.opts._asdict(), replicate=rep)
        if rep is not None:
            opts["disk"] = False
        self.opts = options_mod.FailbackOptions(**opts)
        if rep is not None:
            self._memory_only()

    def _find_replicated(self):
        """A new run: the domain's disk that ``xen-remus replicate serve``
        serves on this host is replicated checkpoint by checkpoint, unless
        the caller named one (``replicate``) or said not to
        (``find_replicated`` false).  The choice is journaled."""
        if self.opts.replicate is not None or not self.opts.find_replicated or self.ts.check_replicate():
            return
        try:
            served = self.ts.served_disks(self.domain)
        except XenRemusError as exc:
            LOG.info("%s: served disks unknown (%s); none replicated", self.domain, exc)
            return
        if not served:
            return
        if len(served) > 1:
            raise FailbackError("%s: disks %s are each served by xen-remus replicate serve, expected one "
                                "(one replicated disk per domain): name it with --replicate-disk VDEV=CONTROL, "
                                "or --no-replicate-disk" % (self.domain, ", ".join(sorted(served))),
                                step="preflight")
        vdev, control = list(served.items())[0]
        rep = ReplicatedDisk(vdev, control, self.opts.replicate_timeout)
        self._set_replicated(rep)
        self.progress("%s: disk %s is served by xen-remus replicate serve (control %s): Remus replicates it "
                      "checkpoint by checkpoint (--no-replicate-disk: do not)" % (self.domain, vdev, control))

    def _adopt_replicated(self, rec):
        """A resumed run replicates the disk its journal chose; a command
        line that names another (or none, with --no-replicate-disk) is refused."""
        jopts = rec.get("options") or {}
        if "replicate" not in jopts:
            return      # journaled before the choice was kept: the command line's
        journaled = ReplicatedDisk(**jopts["replicate"]) if jopts["replicate"] else None
        given = self.opts.replicate
        if given is not None and given != journaled:
            raise FailbackError(
                "%s: the unfinished %s toward %s journaled %s; --replicate-disk %s=%s (timeout %g s) "
                "contradicts it: resume without --replicate-disk, or --abort it first"
                % (self.domain, rec["mode"], rec["host"], _rep_text(journaled), given.vdev, given.control,
                   given.timeout), state=rec["state"])
        if given is None and journaled is not None and not self.opts.find_replicated:
            raise FailbackError(
                "%s: the unfinished %s toward %s journaled %s; --no-replicate-disk contradicts it: "
                "resume without it, or --abort it first" % (self.domain, rec["mode"], rec["host"],
                                                            _rep_text(journaled)), state=rec["state"])
        if journaled is not None and given is None:
            self.progress("%s: resuming with %s, as journaled" % (self.domain, _rep_text(journaled)))
        self._set_replicated(journaled)

    def _journal_opts(self):
        # ssh and key_file (a path) too: the xend hook sends the final delta from them
        return self.opts.journaled()

    # -- public ---------------------------------------------------------------
    def plan_lines(self):
        """The steps still to run, as text (for --dry-run and status)."""
        rec = journal.load(self.domain, self.base)
        state = rec["state"] if rec is not None and rec["state"] not in machine.TERMINAL else machine.NEW
        lines = []
        for i, (step, after) in enumerate(machine.plan(self.mode, state)):
            lines.append("%d. %-11s %s  -> %s" % (i + 1, step, machine.STEP_DOC[step], after))
        return state, lines

    def dry_run(self):
        """:returns: ``(state, plan lines, checks)``; changes nothing."""
        state, lines = self.plan_lines()
        rec = journal.load(self.domain, self.base)
        if rec is not None and rec["state"] not in machine.TERMINAL and rec["host"] == self.host \
                and rec["mode"] == self.mode:
            self._adopt_replicated(rec)
        else:
            self._find_replicated()
        checks, facts = self._checks()
        for d in facts["disks"]:
            d["tracker"], d["tracker_why"] = self.tracker_choice(d["vdev"])
        return state, lines, checks, facts

    def run(self, resume=False):
        """Run to ``done`` from wherever the world and the journal stand.

        :returns: the final journal record.
        :raises FailbackError: a step failed (the journal keeps the error).
        """
        done = journal.load(self.domain, self.base)
        if self._finished(done):
            self.progress("%s: %s toward %s already done" % (self.domain, self.mode, self.host))
            return done
        self.rec = None
        rec = self._open(resume)
        self._save()
        self._reconcile()
        while True:
            nxt = machine.next_step(self.mode, rec["state"])
            if nxt is None:
                break
            step, after = nxt
            self._run_step(step, after)
        self._start_supervisors()
        self.progress("%s: %s complete (%s)" % (self.domain, self.mode, rec["state"]))
        return rec

    def _start_supervisors(self):
        """Generations rotate at the next failover (or loss of the sender)
        only where ``xen-remus supervise`` watches: make sure one runs on
        both hosts.  After the domain runs again, so that it adds no
        downtime; a failure is a warning (failback rotates what was missed)."""
        supervise = self.opts.supervise
        if supervise is None or self.rec["state"] != machine.DONE:
            return
        for where in (None, self.host):
            try:
                supervise(where)
            except XenRemusError as exc:
                LOG.warning("%s: no supervisor on %s: %s", self.domain, where or "this host", exc)
                self.progress("%s: WARNING: no generation supervisor on %s (%s); start `xen-remus "
                              "supervise --daemon` there" % (self.domain, where or "this host", exc))

    def abort(self):
        rec = journal.load(self.domain, self.base)
        if rec is None or rec["state"] in machine.TERMINAL:
            raise FailbackError("%s: --abort: expected an unfinished %s, found %s"
                                % (self.domain, machine.journal_name(self.mode),
                                   "none" if rec is None else "it " + rec["state"]))
        if rec["host"] != self.host:
            raise FailbackError("%s: --abort: the journaled %s goes to %s, not %s; give that host"
                                % (self.domain, rec["mode"], rec["host"], self.host), state=rec["state"])
        self.rec = rec
        self.mode = rec["mode"]
        obs = self._settle()
        actions, final = machine.plan_abort(self.mode, rec["state"], obs)
        journal.note(rec, self.clock.now(), "abort", rec["state"], actions)
        self._save()
        self._perform(actions)
        rec["state"] = final
        rec["step"] = None
        self._save()
        self.progress("%s: aborted (%s)" % (self.domain, ", ".join(actions) or "nothing to undo"))
        if self.mode == machine.FAILBACK and machine.UNPAUSE_PEER in actions and not self.peer.migrates_paused:
            # xend: the domain arrived with its remus disks in primary mode
            self.progress("%s: it runs on %s, unprotected, with every disk write made here; its remus disks "
                          "hold its new writes until a Remus backup connects: protect it from there "
                          "(xen-remus protect %s %s, run on %s)"
                          % (self.domain, self.host, self.domain, self.local_host() or "BACKUP", self.host))
        return rec

    # -- internals --------------------------------------------------------
    def _settle(self):
        """A run killed inside ``migrate`` (or ``protect``) leaves the
        operation itself running (xend's thread, the ``xl`` child, the sim
        agent): a migration will either destroy the source or resume it, a
        Remus start will connect or give up.  Wait until the world stops
        looking half-done (the domain on both hosts, or paused here with no
        copy there; a backup copy without a sender) before judging it, at
        most ``settle_timeout`` seconds.  :returns: the last observation."""
        obs = self.observe()
        step = self.rec.get("step")
        if step == machine.MIGRATE and self.mode == machine.FAILBACK:
            moving_running = not self.ts.migrates_paused

            def in_flux(o):
                # xend: the incoming copy is paused only until its restore ends (then xend
                # unpauses it)
                if moving_running and o.local is None and o.peer == "paused":
                    return True
                return (o.local is not None and o.peer is not None) or (o.local == "paused" and o.peer is None)
        elif step == machine.PROTECT:
            # Remus still starting: a backup copy forms before the sender runs
            def in_flux(o):
                if self.mode == machine.FAILBACK:
                    return o.local is not None and not o.peer_remus
                return o.peer is not None and not o.local_remus
        else:
            return obs
        deadline = self.clock.now() + float(self.opts.settle_timeout)
        while in_flux(obs):
            if self.clock.now() >= deadline:
                LOG.warning("%s: still half-migrated after %.0f s (%s); taking it as dead",
                            self.domain, float(self.opts.settle_timeout), _obs_text(obs))
                break
            self.clock.sleep(float(self.opts.settle_poll))
            obs = self.observe()
        return obs

    def _reconcile(self):
        rec = self.rec
        obs = self._settle()
        said = self.xenstore_says()
        if said is not None:
            LOG.info("%s: xenstore remus-ext here: role %s, state %s", self.domain, said.role, said.state)
        state, actions = machine.reconcile(self.mode, rec["state"], obs)
        if state != rec["state"] or actions:
            self.progress("%s: journal said %s; observed %s; continuing from %s%s"
                          % (self.domain, rec["state"], _obs_text(obs), state,
                             " after " + ", ".join(actions) if actions else ""))
            journal.note(rec, self.clock.now(), "reconciled", rec["state"], state, actions)
            self._perform(actions)
            rec["state"] = state
            self._save()

    #: state -> (where the domain is, role, remus-ext state word)
    _PUBLISH = {
        machine.FAILBACK: dict([(st, ("here", "unprotected", "failing-back"))
                                for st in (machine.NEW, machine.CHECKED, machine.PRECOPIED)]
                               + [(st, ("peer", "unprotected", "failing-back"))
                                  for st in (machine.MIGRATED, machine.DELTA_SENT)]
                               + [(machine.PROTECTED, ("peer", "primary", "protected")),
                                  (machine.DONE, ("peer", "primary", "protected"))]),
        machine.REVERSE: dict([(st, ("here", "unprotected", "reverse-syncing"))
                               for st in (machine.NEW, machine.CHECKED, machine.PRECOPIED,
                                          machine.QUIESCED, machine.DELTA_SENT)]
                              + [(machine.PROTECTED, ("here", "primary", "protected")),
                                 (machine.DONE, ("here", "primary", "protected"))]),
        machine.PROTECT_MODE: dict([(st, ("here", "unprotected", "protecting"))
                                    for st in (machine.NEW, machine.CHECKED, machine.SEEDED, machine.PRECOPIED,
                                               machine.QUIESCED, machine.DELTA_SENT)]
                                   + [(machine.PROTECTED, ("here", "primary", "protected")),
                                      (machine.DONE, ("here", "primary", "protected"))]),
    }

    def _publish(self):
        """Write the domain's remus-ext keys where it runs (informational:
        a xenstore error is logged, never fatal)."""
        from xen_remus_ext import status_keys as xs_status
        where = self._PUBLISH[self.mode].get(self.rec["state"])
        if where is None:
            return
        ts, xs = (self.ts, self.xs) if where[0] == "here" else (self.peer, self.peer_xs)
        if xs is None:
            return
        try:
            info = preflight.find_domain(ts, self.domain)
            if info is None:
                return
            gen = None
            disks = self.rec.get("disks") or ()
            if disks and where[0] == "here":
                from xen_remus_ext.resync import meta
                m = meta.load(disks[0]["src"])
                gen = m.current if m is not None else None
            xs_status.write_status(xs, info.domid, role=where[1], state=where[2], generation=gen)
        except XenRemusError as exc:
            LOG.warning("%s: remus-ext status keys not updated: %s", self.domain, exc)

    def xenstore_says(self):
        """What our keys on this host say about the domain (for the log)."""
        if self.xs is None:
            return None
        from xen_remus_ext import status_keys as xs_status
        try:
            info = preflight.find_domain(self.ts, self.domain)
            return xs_status.read_status(self.xs, info.domid) if info is not None else None
        except XenRemusError as exc:
            LOG.debug("%s: remus-ext keys unreadable: %s", self.domain, exc)
            return None

    def _perform(self, actions):
        for act in actions:
            LOG.info("%s: %s", self.domain, act)
            if act == machine.DESTROY_PEER:
                self.peer.destroy(self.domain)
            elif act == machine.UNPAUSE_LOCAL:
                if self.mode == machine.PROTECT_MODE and self.rec.get("was_paused"):
                    continue    # it was paused before protect touched it
                self.ts.unpause(self.domain)
            elif act == machine.DESTROY_LOCAL_BACKUP:
                self.ts.destroy(self.domain)
            elif act == machine.UNPAUSE_PEER:
                self.peer.unpause(self.domain)
            elif act == machine.SEND_DELTA:
                self.step_final_delta()
            else:  # pragma: no cover - the table and this list are kept together
                raise FailbackError("unknown action %r" % act, state=self.rec["state"])

    def _run_step(self, step, after):
        rec = self.rec
        before = rec["state"]
        rec["step"] = step
        rec["attempt"] = rec.get("attempt", 0) + 1
        rec["error"] = None
        start = self.clock.now()
        rec["timing"][step] = [start, None]
        journal.note(rec, start, "step", step)
        self._save()
        LOG.info("%s %s: step %s start (toward %s, state %s)", self.mode, self.domain, step, self.host, before)
        self.progress("%s: %s ..." % (self.domain, step))
        fn = getattr(self, "step_" + step.replace("-", "_"))
        try:
            fn()
        except Exception as exc:  # the step boundary: journal, log, re-raise (docs/conventions.md, errors)
            rec["error"] = "%s: %s" % (step, exc)
            rec["step"] = None
            journal.note(rec, self.clock.now(), "failed", step, str(exc))
            if step == machine.PREFLIGHT:
                # nothing was done: a terminal record status shows, that the
                # next run replaces without --abort
                rec["state"] = machine.REFUSED
                journal.note(rec, self.clock.now(), "state", machine.REFUSED)
            self._save()
            if isinstance(exc, XenRemusError):   # the CLI prints it; the log file keeps it
                LOG.info("%s %s: step %s end: failed in state %s: %s", self.mode, self.domain, step, before, exc)
            else:
                LOG.error("%s: step %s failed in state %s: %s", self.domain, step, before, exc, exc_info=True)
            if isinstance(exc, FailbackError):
                exc.state = exc.state or before
                exc.step = exc.step or step
                raise
            six.raise_from(FailbackError("%s: %s failed (state %s): %s" % (self.domain, step, before, exc),
                                         state=before, step=step), exc)
        end = self.clock.now()
        LOG.info("%s %s: step %s end: ok, state %s, %.2f s%s", self.mode, self.domain, step, after, end - start,
                 self._generations_text())
        rec["timing"][step] = [start, end]
        rec["state"] = after
        rec["step"] = None
        journal.note(rec, end, "state", after)
        self._save()
        self._publish()

    def _generations_text(self):
        """``; generations vdev=CURRENT ...`` of this host's copies, for the audit line."""
        from xen_remus_ext.resync import meta
        out = []
        for d in self.rec.get("disks") or ():
            try:
                m = meta.load(d["src"]) if d.get("src") else None
            except XenRemusError:
                m = None
            if m is not None:
                out.append("%s=%s" % (d["vdev"], m.current))
        return "; generations here %s" % " ".join(out) if out else ""

    # -- steps (each idempotent) ------------------------------------------------
    def _checks(self):
        return preflight.run_checks(
            self.ts, self.peer, self.domain, self.host, self.mode, self.backup_host(),
            self.disk_pairs, self.disks, self.opts.discard_peer, self.backup_aliases(),
            retarget_ts=self.peer if self.mode == machine.FAILBACK else self.ts,
            config_file=self.opts.config_file,
            memory_only=not self.opts.disk, accept_disk_loss=bool(self.opts.accept_disk_loss),
            shared_disks=self.opts.shared_disks or (), replicate=self.opts.replicate)

    def step_preflight(self):
        checks, facts = self._checks()
        if self.opts.hold_backup:
            # the sender marks the stream (xend) or starts the holder (xl); the
            # backup's toolstack must keep the copy (xend: its patched restore)
            sender, backup = (self.peer, self.ts) if self.mode == machine.FAILBACK else (self.ts, self.peer)
            why = sender.check_hold()
            if why is None and backup is not None:
                why = backup.check_hold()
            checks = list(checks) + [preflight.Check(
                "hold-backup", why is None,
                "the backup holds its copy paused when the stream breaks" if why is None
                else "--hold-backup: %s" % why)]
        self.rec["checks"] = [c.to_dict() for c in checks]
        preflight.raise_failed(checks, self.rec["state"])
        if facts.get("stale_backup") and any(c.name == "stale-backup" and c.ok for c in checks):
            self._discard_stale_backup(facts["stale_backup"])
        if self.mode != machine.PROTECT_MODE:
            self._rotate_missed()
        if self.mode == machine.PROTECT_MODE:
            # a domain paused when protection began stays paused at the end
            self.rec["was_paused"] = preflight.domain_state(
                preflight.find_domain(self.ts, self.domain)) == "paused"
        self.rec["local_host"] = self.backup_host() if self.mode == machine.FAILBACK else self.local_host()
        self.rec["reverse"] = facts["direction"]
        self.rec["disks"] = [dict(d, precopy=[], final=None) for d in facts["disks"]]

    def _discard_stale_backup(self, stale):
        """The peer holds a paused Remus backup copy of this domain from an
        earlier protection (its stream ended), and preflight proved it stale
        (``stale-backup``): discard it without resuming it, so that the
        domain's copy can go there."""
        self.progress("%s: discarding the stale held Remus backup copy %s on %s (%s committed checkpoints)"
                      % (self.domain, stale["name"], self.host,
                         "?" if stale.get("checkpoints") is None else stale["checkpoints"]))
        self.peer.remus_discard(self.domain)
        journal.note(self.rec, self.clock.now(), "discarded", stale["name"], self.host)
        self._save()
        left = preflight.find_backup_copy(self.peer, self.domain)
        if left is not None or preflight.find_domain(self.peer, self.domain) is not None:
            raise FailbackError("%s: expected the stale backup copy on %s gone after its discard, it is still "
                                "there (%s)" % (self.domain, self.host, (left[0].name if left else self.domain)),
                                state=self.rec["state"], step="preflight")

    def _rotate_missed(self):
        """The domain runs here unprotected, after a failover: each copy here
        takes writes its peer does not see, and its generation should have
        rotated when that began (``xen-remus supervise``).  A copy still in
        step with its peer by its record was missed: rotate it now, and
        journal why."""
        from xen_remus_ext.failback.watch import rotate_unseen
        reason = ("failback: this copy runs the domain unprotected but its generation was not rotated when "
                  "that began (no supervisor saw the failover)")
        for r in rotate_unseen(self.ts, self.domain, reason):
            journal.note(self.rec, self.clock.now(), "rotated", r["vdev"], r["old"], r["new"], reason)
            self.progress("%s %s: generation rotated %s -> %s (the failover was not recorded)"
                          % (self.domain, r["vdev"], r["old"], r["new"]))

    def _disk_tracker(self, d, start=False):
        tr = self.tracker(d["vdev"], start=start)
        if tr is not None and not tr.trustworthy():
            LOG.warning("%s %s: tracker %s may have lost writes; checksums instead",
                        self.domain, d["vdev"], tr.name)
            return None
        return tr

    def step_precopy(self):
        """Pass 1 compares the whole disk (the tracker is marked just before it,
        so it sees every write the pass may miss); later passes send only the
        tracked writes, while they keep shrinking."""
        discard = bool(self.opts.discard_peer)
        for d in self.rec["disks"]:
            d["precopy"] = []
            kind, why = self.tracker_choice(d["vdev"])
            LOG.info("%s %s: dirty-block tracker: %s (%s)", self.domain, d["vdev"], kind or "none", why)
            tr = self._disk_tracker(d, start=True)
            d["tracker"] = tr.name if tr is not None else None
            d["tracker_why"] = why if tr is not None or kind is None else "%s; it could not be marked" % why
            self.progress("%s %s: dirty-block tracker %s: %s" % (self.domain, d["vdev"], d["tracker"] or "none",
                                                                d["tracker_why"]))
            passes = self.opts.precopy_passes if tr is not None else 1
            for n in range(max(1, passes)):
                res = sync_waiting(self.disks, self.clock, self.opts, d["src"], d["dest"],
                                   tracker=tr if n else None, rate=self.opts.rate, verify=False,
                                   discard_target=discard)
                if tr is not None and n and res.get("mode") == "tracked":
                    tr.clear()  # forgets only what this pass was given
                d["precopy"].append(res)
                self._save()
                self.progress("%s %s: pre-copy pass %d: %s, %d bytes sent in %.2f s"
                              % (self.domain, d["vdev"], n + 1, res.get("mode"), res.get("bytes_sent") or 0,
                                 res.get("seconds") or 0.0))
                if n and (res.get("bytes_sent") or 0) <= self.opts.precopy_target:
                    break
            if tr is None:
                d["estimate"] = self._estimate(d)
                self.progress("%s %s: no tracker; the final pass compares checksums while the domain is "
                              "suspended: estimated downtime %.1f s" % (self.domain, d["vdev"], d["estimate"]))

    def _estimate(self, d):
        """Seconds a checksum pass over the whole disk takes, from the pre-copy's read rate."""
        res = d["precopy"][-1] if d["precopy"] else {}
        secs = res.get("seconds") or 0.0
        read = res.get("bytes_read") or 0
        size = d.get("size") or read
        if secs <= 0 or read <= 0:
            return 0.0
        return size / (read / secs)

    def step_migrate(self):
        self.rec["delta"] = journal.Delta().to_dict()
        self._save()
        if not self.ts.migrates_paused:
            # the domain cannot stay paused on arrival: the external-migration-tool
            # hook sends the final delta at device-migrate step 2 (delta.py), and
            # asks this process to, over connections opened now, before the suspend
            self._prepare_final()
            try:
                with self.ts.serve_final_delta(self.domain, self.host, self._hook_delta):
                    self.ts.migrate(self.domain, self.host, live=True, port=self.opts.port)
            finally:
                self.disks.release_prepared()
            self._adopt_hook_delta()
        else:
            self.ts.migrate(self.domain, self.host, live=True, port=self.opts.port, paused=True,
                            ssh=self.opts.ssh if self.opts.ssh != "ssh" else None)
        self.rec["migrated_at"] = self.clock.now()

    def _prepare_final(self):
        """Open the final delta's connections now, so that the suspend
        window holds only the delta itself.  A failure costs only that time:
        the send then opens its own."""
        for d in self.rec["disks"]:
            try:
                took = self.disks.prepare(d["dest"])
            except XenRemusError as exc:
                LOG.warning("%s %s: cannot open the final delta's connection before the suspend (%s); "
                            "it will be opened while the domain is suspended", self.domain, d["vdev"], exc)
                continue
            if took is not None:
                d["prepared"] = took
                LOG.info("%s %s: final delta's connection to %s open before the suspend (%.2f s)",
                         self.domain, d["vdev"], d["dest"], took)

    def _hook_delta(self):
        """Run by the migration hook's request (another thread, while this
        one waits in migrate): the final delta over the prepared connections."""
        rec = self.rec
        if journal.delta_of(rec).sent:
            return rec["delta"]
        if rec.get("step") != machine.MIGRATE:
            raise FailbackError("%s: the migration hook asked for the final delta in step %s, expected %s"
                                % (self.domain, rec.get("step"), machine.MIGRATE), state=rec["state"],
                                step=machine.FINAL_DELTA)
        try:
            send_final_delta(rec, self.disks, self.tracker, self.clock, "xend-hook", self.opts)
        except XenRemusError as exc:
            journal.note(rec, self.clock.now(), "failed", machine.FINAL_DELTA, str(exc))
            self._save()
            raise
        journal.note(rec, self.clock.now(), "delta", "xend-hook")
        self._save()
        LOG.info("%s: final delta sent for the migration hook (%.3f s)", self.domain, rec["delta"].get("seconds")
                 or 0.0)
        return rec["delta"]

    def _adopt_hook_delta(self):
        """The migration hook wrote its delta record into the journal file
        while we waited in migrate; take it, or our next save loses it."""
        disk_rec = journal.load(self.domain, self.base)
        if disk_rec is not None and journal.delta_of(disk_rec).sent:
            self.rec["delta"] = disk_rec["delta"]
            finals = dict((d["vdev"], d.get("final")) for d in disk_rec.get("disks", ()))
            for d in self.rec["disks"]:
                d["final"] = finals.get(d["vdev"], d.get("final"))
            self.rec["history"] = disk_rec.get("history", self.rec["history"])

    def _retarget(self, ts):
        """Point the domain's remus disks at the backup (``ts`` holds the
        domain, paused).  Idempotent: a config already right is left alone."""
        if not self.rec.get("reverse"):
            return
        backup = self.rec.get("local_host") if self.mode == machine.FAILBACK else self.host
        cfg, changed = preflight.plan_direction(ts.domain_config(self.domain), backup, self.backup_aliases())
        if changed:
            lacks = ts.check_retarget()
            if lacks:
                raise FailbackError("%s: disks %s replicate elsewhere than %s and cannot be re-pointed: %s"
                                    % (self.domain, ", ".join(changed), backup, lacks), state=self.rec["state"])
            ts.retarget_disks(self.domain, cfg)
            self.progress("%s: disks %s now replicate to %s" % (self.domain, ", ".join(changed), backup))

    def step_seed(self):
        """Create each backup copy that is absent as a sparse image of the
        disk's size (the pre-copy then fills it; holes stay holes).  A copy
        that appeared since the preflight is left alone: the pre-copy's
        generation check judges it."""
        for d in self.rec["disks"]:
            if not d.get("create"):
                continue
            if self.disks.peer_state(d["dest"])["exists"]:
                LOG.info("%s %s: %s exists already (an earlier run created it)", self.domain, d["vdev"], d["dest"])
            else:
                self.disks.create(d["dest"], d["size"])
                self.progress("%s %s: created %s (%d bytes, sparse)" % (self.domain, d["vdev"], d["dest"], d["size"]))
            d["created"] = True
            self._save()

    def step_pause(self):
        self.rec["delta"] = journal.Delta().to_dict()
        self._save()
        if preflight.domain_state(preflight.find_domain(self.ts, self.domain)) != "paused":
            self.ts.pause(self.domain)
        self.rec["paused_at"] = self.clock.now()

    def step_final_delta(self):
        rec = self.rec
        if journal.delta_of(rec).sent:
            return  # the xend hook (or an earlier run) sent it after the domain stopped writing
        local = preflight.domain_state(preflight.find_domain(self.ts, self.domain))
        if self.mode == machine.FAILBACK and local is not None:
            raise FailbackError("%s: expected the domain gone from here before the final delta, found it %s"
                                % (self.domain, local), state=rec["state"], step=machine.FINAL_DELTA)
        if self.mode == machine.FAILBACK:
            there = preflight.domain_state(preflight.find_domain(self.peer, self.domain))
            if there != "paused":
                raise FailbackError(
                    "%s: expected it paused on %s until its disk is complete, found it %s: it may "
                    "have read a stale disk (on xend, is the migration hook installed? see xen-remus "
                    "hook-config)" % (self.domain, self.host, there or "absent"),
                    state=rec["state"], step=machine.FINAL_DELTA)
        if self.mode != machine.FAILBACK and local != "paused":
            raise FailbackError("%s: expected the domain paused here for the final delta, found it %s"
                                % (self.domain, local), state=rec["state"], step=machine.FINAL_DELTA)
        send_final_delta(rec, self.disks, self.tracker, self.clock, "orchestrator", self.opts)
        self._save()

    def _run_before_remus(self, ts):
        """Unpause the domain on ``ts`` before Remus starts there, for a
        toolstack whose Remus sender refuses a paused domain; the downtime
        then ends here, and the unpause step only reports it."""
        if self.mode == machine.PROTECT_MODE and self.rec.get("was_paused"):
            raise FailbackError("%s: paused before protection began, and the %s toolstack starts "
                                "Remus only on a running domain: unpause it, then run protect "
                                "--resume" % (self.domain, ts.kind),
                                state=self.rec["state"], step=machine.PROTECT)
        if preflight.domain_state(preflight.find_domain(ts, self.domain)) == "paused":
            ts.unpause(self.domain)
            self.rec["running_at"] = self.clock.now()
            self._save()
            self.progress("%s: running again before Remus starts (it refuses a paused domain)"
                          % self.domain)

    def _unpause_once(self, ts, running_at):
        # unpaused already before Remus started (xl refuses to unpause a
        # running domain): only a domain still paused is unpaused
        if running_at is None or preflight.domain_state(preflight.find_domain(ts, self.domain)) == "paused":
            ts.unpause(self.domain)

    def step_unpause(self):
        running_at = self.rec.get("running_at")
        if self.mode == machine.FAILBACK:
            self._unpause_once(self.peer, running_at)
            ref = self.rec.get("migrated_at")
            first = (self.rec["timing"].get(machine.MIGRATE) or [None])[0]
        elif self.mode == machine.PROTECT_MODE and self.rec.get("was_paused"):
            self.progress("%s: left paused, as it was when protection began" % self.domain)
            return
        else:
            self._unpause_once(self.ts, running_at)
            ref = first = self.rec.get("paused_at")
        end = self.clock.now() if running_at is None else running_at
        if ref is None:
            return
        extra = self.ts.migration_downtime() if self.mode == machine.FAILBACK else None
        # what failback adds after the memory moved (final delta, protect,
        # unpause), plus the toolstack's stop-and-copy time when it reports it
        self.rec["downtime"] = (end - ref) + (extra or 0.0)
        # upper bound: from the start of the migration (the sim and a
        # non-live migration suspend the domain right there)
        self.rec["downtime_max"] = end - (first if first is not None else ref)
        self.progress("%s: running again on %s; downtime %.3f s (at most %.3f s)"
                      % (self.domain, self.host if self.mode == machine.FAILBACK else "this host",
                         self.rec["downtime"], self.rec["downtime_max"]))

    def step_protect(self):
        if self.mode == machine.FAILBACK:
            ts, backup = self.peer, self.rec.get("local_host") or self.backup_host()
        else:
            ts, backup = self.ts, self.host
        if ts.remus_running(self.domain):
            return
        other = self.ts if self.mode == machine.FAILBACK else self.peer
        if preflight.find_domain(other, self.domain) is not None:
            # a backup copy left by an interrupted protect step (the domain
            # itself is paused on the primary): Remus starts a new one
            LOG.warning("%s: removing the stale Remus backup copy on %s", self.domain, backup)
            other.destroy(self.domain)
        self._retarget(ts)
        if ts.remus_needs_running_domain():
            self._run_before_remus(ts)
        extra = {} if self.opts.disk else {"disk": False}
        if self.opts.hold_backup:
            extra["hold"] = True
        if self.opts.replicate is not None:
            extra["replicate"] = self.opts.replicate
        ts.remus_start(self.domain, backup, interval_ms=self.opts.interval_ms, net=self.opts.net, **extra)
        again = "" if self.mode == machine.PROTECT_MODE else " again"
        self.progress("%s: Remus protects it%s toward %s" % (self.domain, again, backup))
        for d in self.rec["disks"]:
            self.disks.mark_protected(d["src"])   # this host's copy is in step with the primary again


def _rep_text(rep):
    if rep is None:
        return "no replicated disk"
    return "disk %s replicated through %s (timeout %g s)" % (rep.vdev, rep.control, rep.timeout)


def _obs_text(obs):
    parts = ["here: %s" % (obs.local or "absent"), "peer: %s" % (obs.peer or "absent")]
    if obs.local_remus:
        parts.append("Remus from here")
    if obs.peer_remus:
        parts.append("Remus from the peer")
    if obs.delta_recorded:
        parts.append("final delta recorded")
    return ", ".join(parts)
