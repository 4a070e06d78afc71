"""Interfaces between the pure core and the world.

The orchestration (failback, resync, status) talks only to these.  Real
adapters live in ``toolstack/``, ``trackers/`` and the resync engine
(``resync/disksync.py``); doubles in ``tests/fakes`` and the simulator in
``sim/``; only the composition root (``wiring``) picks one.  One contract
suite (tests/adapter/test_contract_toolstack.py) runs over each Toolstack,
the doubles included, so they cannot drift.

Domains are named by name or domid (``dom``), as xm and xl accept both.

A :class:`Toolstack` has required operations (``NotImplementedError`` here)
and optional capabilities, each with a default meaning "this toolstack does
not have it" that the core can act on without asking what kind of toolstack
it holds.
"""
from __future__ import absolute_import, division, print_function

import time

from xen_remus_ext.errors import ToolstackError, XenStoreError


class Toolstack(object):
    """xend (XML-RPC), xl (CLI) or the simulator's agent, on ONE host."""

    #: "xend", "xl" or "sim": a name for logs, journals and messages only
    #: (the core asks the capabilities below, never the kind)
    kind = None

    #: whether ``migrate(..., paused=True)`` leaves the domain paused on
    #: arrival.  False (xend): migrate refuses ``paused``; the domain runs on
    #: arrival, and failback sends the final disk delta from the
    #: device-migrate hook while the domain is suspended (xend/hook.py).
    migrates_paused = True

    def list_domains(self):
        """:returns: list of :class:`model.DomainInfo` (dom0 included)."""
        raise NotImplementedError

    def domain_info(self, dom):
        """:returns: :class:`model.DomainInfo`; :raises ToolstackError: unknown domain."""
        raise NotImplementedError

    def domain_config(self, dom):
        """:returns: the running domain's :class:`model.DomainConfig`."""
        raise NotImplementedError

    def host_info(self):
        """:returns: dict with at least ``free_memory`` (MiB) and ``xen_version``."""
        raise NotImplementedError

    def pause(self, dom):
        raise NotImplementedError

    def unpause(self, dom):
        raise NotImplementedError

    def save(self, dom, path, checkpoint=False):
        raise NotImplementedError

    def restore(self, path, paused=False):
        raise NotImplementedError

    def migrate(self, dom, dst, live=True, port=None, paused=False, ssh=None, config=None):
        """Move memory (never disks) to ``dst``.

        :param paused: leave the domain paused on arrival (``xl migrate -p``).
        :param ssh: xl's ``-s`` command; :param config: xl's ``-C`` file.
        """
        raise NotImplementedError

    def destroy(self, dom):
        raise NotImplementedError

    def remus_start(self, dom, host, interval_ms=200, port=None, net=True, disk=True,
                    blackhole=False, unsafe=False, hold=False):
        """Start Remus protection of ``dom`` toward ``host`` (the backup).

        :param hold: the backup keeps its copy paused when the stream breaks,
            until :meth:`remus_takeover` (or :meth:`remus_discard`) on the
            backup's toolstack; only where :meth:`check_hold` says None.

        A toolstack whose :meth:`check_replicate` passes also takes
        ``replicate=``: a :class:`model.ReplicatedDisk` carried by
        ``xen-remus replicate``'s relay (with ``disk=False``).
        """
        raise NotImplementedError

    def remus_stop(self, dom):
        raise NotImplementedError

    def remus_running(self, dom):
        """:returns: True when a Remus sender for ``dom`` runs on this host."""
        raise NotImplementedError

    # -- optional capabilities (the defaults: not available) ------------------

    def check_replicate(self):
        """:returns: None when ``remus_start(replicate=...)`` works here, else
        why not (text).  Default: not available."""
        return ("the %s toolstack cannot replicate a disk with xen-remus replicate (xl only)"
                % (self.kind or "?",))

    def served_disks(self, dom):
        """The disks of ``dom`` (running on this toolstack's host) whose
        backend is the NBD device of a ``xen-remus replicate serve`` there.

        :returns: ``{vdev: control socket path}``; default: none.
        :raises XenRemusError: the domain or its config cannot be read."""
        return {}

    def served_devices(self):
        """The disks ``xen-remus replicate serve`` serves on this toolstack's
        host: ``[{"device", "image", "control"}]`` of the live servers, or
        None (default): this toolstack cannot tell.

        :raises XenRemusError: the host cannot be asked."""
        return None

    def use_memory_only(self):
        """Remus will run memory-only (``xl remus -d``, a replicated disk
        included): from now on every writable disk of a domain counts as a
        remus disk that failback resyncs.  Default: nothing to change."""
        return None

    def check_migrate_paused(self):
        """:returns: None when ``migrate(paused=True)`` works here, else why
        not (text; e.g. an xl older than 4.8).  Default: None."""
        return None

    def check_migrate_hook(self):
        """For a toolstack that cannot migrate paused: :returns: None when
        this host's running toolstack sends the final disk delta while the
        domain is suspended during migrate (xend: our external-migration-tool
        or blktap override), else why not (text); without it the destination
        resumes the domain on a stale disk.  Default: None."""
        return None

    def disk_path(self, path):
        """Where this process opens the copy, on this toolstack's host, of
        the disk a domain's config names ``path``.

        :returns: a local path (simulated hosts: a file under the host's
            root), or None (default): the host's own ``path``, which is a
            local path for this host and is reached over ssh or TCP for a peer.
        """
        return None

    def tracker_for(self, dom, vdev):
        """:returns: an unmarked :class:`Tracker` of ``dom``'s disk
        ``vdev``, or None (default): no dirty-block tracking, the final pass
        compares checksums.
        :raises XenRemusError: tracking is offered but not possible for this disk."""
        return None

    def tracks_writes(self):
        """:returns: True when :meth:`tracker_for` gives trackers (default False)."""
        return False

    def serve_final_delta(self, dom, host, send):
        """For a toolstack whose migrate sends the final disk delta from its
        device-migrate hook (``migrates_paused`` False): a context manager
        during which that hook, another process, may ask this one to run
        ``send()`` (which holds the connections prepared before the suspend)
        instead of opening its own.  ``send()`` returns the journal's delta
        record.  Default: nothing is served (the hook sends by itself)."""
        import contextlib

        @contextlib.contextmanager
        def nothing():
            yield None
        return nothing()

    def tracker_choice(self, dom, vdev):
        """Which dirty-block tracker :meth:`tracker_for` gives for ``dom``'s
        disk ``vdev``, and why (for the log, ``--dry-run`` and ``--json``).

        :returns: ``(name, why)``: the tracker's :attr:`Tracker.name`, or
            None when the final pass compares checksums; ``why`` a sentence.
            Default: from :meth:`tracks_writes`.
        :raises XenRemusError: the domain or disk cannot be read."""
        kind = self.kind or "?"
        if self.tracks_writes():
            return "available", "the %s toolstack offers a dirty-block tracker" % kind
        return None, "the %s toolstack tracks no disk writes" % kind

    def check_retarget(self):
        """:returns: None when :meth:`retarget_disks` can re-point a domain's
        remus disks on this host, else why not (text).  Default: it cannot."""
        return "the %s toolstack cannot re-point a running domain's remus disks" % (self.kind or "?",)

    def retarget_disks(self, dom, config):
        """Re-point the paused domain ``dom``'s remus disks at the hosts
        ``config``'s remus unames name.  Default: :meth:`check_retarget`'s reason.

        :raises ToolstackError: not possible here.
        """
        raise ToolstackError("retarget the remus disks of %s: %s" % (dom, self.check_retarget()))

    def remus_backup(self, dom):
        """:returns: None when ``dom`` here is not known to be a Remus
        backup's copy (default), else ``{"state": "receiving"|"broken",
        "checkpoints": N or None}``."""
        return None

    def check_hold(self):
        """:returns: None when a Remus backup here can wait, paused at its
        last committed checkpoint, when its stream breaks (:meth:`hold_on_stream_break`,
        ``remus_start(hold=True)``), else why not (text).  Default: this
        toolstack resumes a Remus backup by itself when the checkpoint stream breaks."""
        return ("the %s toolstack resumes a Remus backup by itself when the checkpoint stream breaks"
                % (self.kind or "?",))

    def hold_on_stream_break(self, hold=True):
        """Under a cluster manager: from now on, a backup copy on this host
        whose checkpoint stream breaks stays paused at its last committed
        checkpoint (:meth:`remus_backup` says ``broken``) until
        :meth:`remus_takeover`; ``hold=False`` gives Remus's own behaviour
        back (the backup resumes at once).  Where the primary asks for the
        hold per stream (``remus_start(hold=True)``: xl) this sets nothing.
        Default: not possible.

        :raises ToolstackError: :meth:`check_hold`'s reason.
        """
        raise ToolstackError("hold a Remus backup for promote: %s" % self.check_hold())

    def remus_takeover(self, dom):
        """Resume the held backup copy ``dom`` from its last committed
        checkpoint (its stream broke; the old primary is fenced).  Default:
        not possible (a toolstack that cannot hold a backup never has one).

        :raises ToolstackError: :meth:`check_hold`'s reason, or ``dom`` is no held backup.
        """
        raise ToolstackError("take over the Remus backup %s: %s" % (dom, self.check_hold()))

    def remus_discard(self, dom):
        """Destroy the backup copy of ``dom`` here without resuming it (held,
        or still receiving: the primary then runs unprotected).  Default:
        :meth:`destroy`."""
        self.destroy(dom)

    def shutdown(self, dom):
        """Ask ``dom``'s guest to shut down cleanly and return at once.

        :returns: True when asked; False (default): this toolstack offers no
            clean shutdown here, the caller destroys the domain instead.
        """
        return False

    def create_from_file(self, path):
        """Start a domain from its configuration file ``path`` on this host
        (``xl create``, ``xm create``).  Default: not possible.

        :raises ToolstackError: not possible here, or the toolstack refused.
        """
        raise ToolstackError("%s: the %s toolstack cannot start a domain from a file"
                             % (path, self.kind or "?"))

    def migration_downtime(self):
        """:returns: seconds the last :meth:`migrate` kept the domain
        stopped, as the toolstack measured it, or None (default: not reported)."""
        return None

    def migrating_away(self, dom):
        """:returns: the :class:`model.DomainInfo` of ``dom`` while this
        toolstack is migrating it away under another name, else None
        (default: a toolstack that keeps the name while it migrates).  xend
        renames the source ``migrating-DOM`` for the whole save, so ``dom``
        itself looks gone from here before the migration has ended."""
        return None

    def remus_needs_running_domain(self):
        """:returns: True when :meth:`remus_start` must find the domain
        running, not paused: the sender's first, live pass then meets page
        tables the guest is still using (default False: Remus may start on
        the paused domain, which protection then unpauses)."""
        return False


class XenStore(object):
    """Paths and values are text here; adapters convert to bytes."""

    def read(self, path, default=None):
        raise NotImplementedError

    def write(self, path, value):
        raise NotImplementedError

    def list(self, path):
        raise NotImplementedError

    def delete(self, path):
        raise NotImplementedError

    def exists(self, path):
        raise NotImplementedError

    def transaction(self):
        """A context manager yielding an object with read/write/list/delete;
        commits on exit, retries the block's effects never (the caller loops
        on :class:`errors.XenStoreError` with errno EAGAIN)."""
        raise NotImplementedError

    def watch(self, path, token):
        """:returns: an iterator of ``(path, token)`` events; close() ends it."""
        raise NotImplementedError

    def close(self):
        """Release the connection (default: nothing to release)."""


def run_transaction(store, fn, attempts=20):
    """Run ``fn(tx)`` in a transaction of ``store``, retrying on EAGAIN.

    :param store: any :class:`XenStore`.
    :returns: what ``fn`` returned in the attempt that committed.
    :raises XenStoreError: EAGAIN after ``attempts`` conflicts, or any other error.
    """
    import errno
    for _attempt in range(attempts):
        try:
            with store.transaction() as tx:
                result = fn(tx)
            return result
        except XenStoreError as exc:
            if exc.errno != errno.EAGAIN:
                raise
    raise XenStoreError("xenstore transaction: expected a commit within %d attempts" % attempts,
                        errno=errno.EAGAIN)


class Tracker(object):
    """A source of dirty extents for one disk since a mark."""

    #: a short name for logs and --json ("blktap2-log", "fiemap", "sim")
    name = None

    def trustworthy(self):
        """:returns: True when every write since the mark is known to be
        recorded (a tracker that may have lost writes returns False and the
        resync falls back to checksums)."""
        raise NotImplementedError

    def mark(self):
        """Start (or restart) recording from now on."""
        raise NotImplementedError

    def dirty_extents(self):
        """:returns: sorted, non-overlapping list of :class:`model.Extent`
        written since the mark."""
        raise NotImplementedError

    def clear(self):
        """Forget the extents reported so far (after they were synced)."""
        raise NotImplementedError


class Runner(object):
    """Executes argv lists (never shell strings)."""

    def run(self, argv, input=None, timeout=None, env=None):
        """:returns: ``(returncode, stdout_bytes, stderr_bytes)``."""
        raise NotImplementedError


class Clock(object):
    def now(self):
        raise NotImplementedError

    def sleep(self, seconds):
        raise NotImplementedError


class SystemClock(Clock):
    """The wall clock and a real sleep."""

    def now(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(seconds)


class DiskSync(object):
    """What failback asks of a domain's disks: the generation relation of
    the peer's copy to ours, sizes, and one resync pass.

    ``dest`` is what the resync engine takes: a local path, ``HOST:PATH``
    (ssh) or ``tcp://HOST:PORT/EXPORT``.
    """

    #: the keys of the dict :meth:`sync` returns (``resumed``: bytes an interrupted pass had
    #: finished, compared again; ``resent``: of those, bytes that differed and were sent again)
    RESULT_FIELDS = ("mode", "bytes_read", "bytes_sent", "extents", "seconds", "verified", "resumed", "resent")

    def relation(self, src, dest):
        """:returns: ``identical``, ``target-behind``, ``target-new``,
        ``target-ahead``, ``split-brain`` or ``unrelated`` (resync/meta.py)."""
        raise NotImplementedError

    def size(self, path):
        raise NotImplementedError

    def peer_size(self, dest):
        """:returns: the size of the peer's copy, or None if unknown."""
        raise NotImplementedError

    def sync(self, src, dest, tracker=None, rate=None, verify=False, discard_target=False,
             final=False, events=None):
        """One resync pass; :returns: dict with :data:`RESULT_FIELDS`."""
        raise NotImplementedError

    def peer_state(self, dest):
        """:returns: dict ``exists`` (bool), ``size`` (int or None), ``meta``
        (the copy's generation record as a dict, or None)."""
        raise NotImplementedError

    def create(self, dest, size):
        """Create the absent copy ``dest`` as a sparse image of ``size``
        bytes; :raises ResyncError: it exists, or cannot be created."""
        raise NotImplementedError

    def mark_protected(self, path):
        """Remus protects ``path``'s domain again with both copies in step.
        Default: nothing to record."""

    def prepare(self, dest):
        """Open the connection the next :meth:`sync` to ``dest`` will use,
        now (before a suspend), so that the sync only sends.  A prepared
        connection found dead then is replaced by a new one.

        :returns: seconds the opening took, or None (default): nothing to
            prepare, the sync opens its own.
        :raises XenRemusError: it could not be opened (the sync will try again)."""
        return None

    def release_prepared(self):
        """Close the prepared connections no :meth:`sync` used.  Default: none."""
