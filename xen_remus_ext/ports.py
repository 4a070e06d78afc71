"""Interfaces between the pure core and the world (STYLE.md section 2).

The orchestration (failback, resync, status) talks only to these.  Real
adapters live in ``toolstack/`` and ``trackers/``; doubles in ``tests/fakes``
and the simulator in ``sim/``.  One contract suite (tests/adapter) runs over
each adapter and each double so they cannot drift.

Domains are named by name or domid (``dom``), as xm and xl accept both.
"""
from __future__ import absolute_import, division, print_function


class Toolstack(object):
    """xend (XML-RPC), xl (CLI) or the simulator's agent, on ONE host."""

    #: "xend", "xl" or "sim"
    kind = None

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
                    blackhole=False, unsafe=False):
        """Start Remus protection of ``dom`` toward ``host`` (the backup)."""
        raise NotImplementedError

    def remus_stop(self, dom):
        raise NotImplementedError

    def remus_running(self, dom):
        """:returns: True when a Remus sender for ``dom`` runs on this host."""
        raise NotImplementedError


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
