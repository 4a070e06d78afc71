"""Holding an xl Remus backup paused when its checkpoint stream breaks.

``xl migrate-receive -r`` (what ``xl remus`` runs on the backup) fails over
as soon as its stdin ends: it completes the restore from the last committed
checkpoint, renames ``DOM--incoming`` to ``DOM`` and calls
``libxl_domain_unpause`` unconditionally (``migrate_receive`` in
``tools/xl/xl_migrate.c``, Xen 4.17; only COLO skips the unpause).  A
partition ends the stream just as a dead primary does, so under a cluster
manager the backup must not see that end before the primary is fenced.

The *holder* (``xen-remus hold receive --domain DOM -- xl migrate-receive -r``)
sits on the backup between the transport (ssh) and xl's receiver:

* while the stream flows it copies it to the receiver's stdin, unchanged,
  and counts the committed checkpoints (libxl's CHECKPOINT_END records,
  read with :mod:`replication.stream`; a stream it cannot parse is still
  copied, only the count is then unknown);
* when the stream ends (the primary died, the link broke, or Remus was
  stopped there) it keeps the receiver's stdin open: xl keeps waiting, the
  domain stays paused at its last committed checkpoint (``held``); a stream
  that ends before its first checkpoint is passed on (xl's receiver then
  fails and removes its partial copy: there is nothing to resume);
* :func:`release` (a promote, after fencing) closes that stdin: xl fails
  over and runs the guest from that checkpoint;
* :func:`discard` kills the receiver first (no failover) and destroys
  ``DOM--incoming``; so does a holder that finds its domain destroyed by
  someone else, or that is terminated.

The receiver dies with the holder (``PR_SET_PDEATHSIG``), and a guard
process keeps a copy of its stdin open until then
(:func:`xen_remus_ext.replication.guard.hold_open`): a
holder that dies for any reason never lets xl read an end of stream.

One holder per domain and host: it holds ``<state dir>/hold/DOM.lock``
(flock) for its life, and a second ``hold receive`` of the same domain is
refused rather than let it take over the state of a copy still held.
The holder's state is ``<state dir>/hold/DOM.json`` (``state``:
``receiving``, ``held``, ``released``, ``discarded``, ``ended``;
``checkpoints``; ``pid``; ``child``), its log ``DOM.log`` next to it.
"""
from __future__ import absolute_import, division, print_function

import errno
import fcntl
import json
import logging
import os
import re
import select
import signal
import subprocess
import sys
import time

from xen_remus_ext.compat import to_bytes, to_text
from xen_remus_ext.errors import StreamFormatError, ToolstackError
from xen_remus_ext.paths import state_dir
from xen_remus_ext.replication import guard

LOG = logging.getLogger(__name__)

INCOMING_SUFFIX = "--incoming"
RECEIVING, HELD, RELEASED, DISCARDED, ENDED = "receiving", "held", "released", "discarded", "ended"
_SAFE = re.compile(r"[^A-Za-z0-9_.@+-]")
READ_MAX = 1 << 16


def directory(base=None):
    return os.path.join(base or state_dir(), "hold")


def _key(dom):
    return _SAFE.sub("_", str(dom))


def state_path(dom, base=None):
    return os.path.join(directory(base), "%s.json" % _key(dom))


def log_path(dom, base=None):
    return os.path.join(directory(base), "%s.log" % _key(dom))


def lock_path(dom, base=None):
    return os.path.join(directory(base), "%s.lock" % _key(dom))


def claim(dom, base=None):
    """Take ``dom``'s holder lock (held for the process's life).
    :returns: the lock's descriptor.
    :raises ToolstackError: another holder of ``dom`` runs here: taking its
        state over would leave its copy paused where no release or discard
        reaches it."""
    path = lock_path(dom, base)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (IOError, OSError) as exc:
        os.close(fd)
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise ToolstackError("hold receive of %s: cannot lock %s: %s" % (dom, path, exc.strerror))
        try:
            st = load(dom, base) or {}
        except ToolstackError:
            st = {}
        raise ToolstackError("hold receive of %s: a holder already runs here (pid %s, %s; %s): release or "
                             "discard its copy first (xen-remus hold release|discard %s)"
                             % (dom, st.get("pid", "?"), st.get("state", "state unknown"), path, dom))
    return fd


def _write_state(path, st):
    tmp = "%s.tmp.%d" % (path, os.getpid())
    with open(tmp, "wb") as f:
        f.write(to_bytes(json.dumps(st, sort_keys=True)))
    os.rename(tmp, path)


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return [to_text(a, errors="replace") for a in f.read().split(b"\0") if a]
    except (IOError, OSError):
        return None


def holder_alive(st, dom):
    """Whether the holder named by state ``st`` still runs (its PID's command
    line still says ``hold receive`` for ``dom``: a recycled PID is not it)."""
    pid = st.get("pid") if isinstance(st, dict) else None
    if not isinstance(pid, int) or pid <= 0:
        return False
    cmd = _cmdline(pid)
    return bool(cmd) and "hold" in cmd and "receive" in cmd and str(dom) in cmd


def load(dom, base=None):
    """The holder state of ``dom`` on this host, or None.  ``alive`` is
    added: whether its holder process still runs."""
    path = state_path(dom, base)
    try:
        with open(path, "rb") as f:
            st = json.loads(to_text(f.read()))
    except (IOError, OSError):
        return None
    except ValueError as exc:
        raise ToolstackError("%s: expected the holder's JSON state, got unreadable data: %s" % (path, exc))
    if not isinstance(st, dict):
        raise ToolstackError("%s: expected a JSON object, got %s" % (path, type(st).__name__))
    st["alive"] = holder_alive(st, dom)
    return st


def backup_status(dom, base=None):
    """For :meth:`Toolstack.remus_backup`: ``{"state": "receiving"|"broken",
    "checkpoints": N or None, "held": bool}`` from the holder of ``dom``, or
    None when no live holder receives it."""
    st = load(dom, base)
    if st is None or not st["alive"] or st.get("state") not in (RECEIVING, HELD):
        return None
    return {"state": "broken" if st["state"] == HELD else "receiving",
            "checkpoints": st.get("checkpoints"), "held": st["state"] == HELD}


def _signal_holder(dom, sig, want, base=None):
    st = load(dom, base)
    if st is None or not st["alive"]:
        raise ToolstackError("backup copy of %s: expected a holder running here, found none (%s)"
                             % (dom, state_path(dom, base)))
    if want is not None and st.get("state") not in want:
        raise ToolstackError("backup copy of %s: expected it %s, got it %s"
                             % (dom, " or ".join(want), st.get("state")))
    os.kill(st["pid"], sig)
    return st


def _wait_gone(dom, st, timeout, base=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if not holder_alive(st, dom):
            return load(dom, base)
        time.sleep(0.05)
    raise ToolstackError("backup copy of %s: its holder (pid %s) still runs after %.0f s"
                         % (dom, st.get("pid"), timeout))


def release(dom, timeout=120.0, base=None):
    """Let the held copy of ``dom`` fail over (xl resumes it from its last
    committed checkpoint).  :returns: the holder's final state.
    :raises ToolstackError: no copy held here (none, or its stream still flows)."""
    st = _signal_holder(dom, signal.SIGUSR1, (HELD,), base)
    return _wait_gone(dom, st, timeout, base)


def discard(dom, timeout=60.0, base=None):
    """Destroy the backup copy of ``dom`` without resuming it (held or still
    receiving: the primary then runs unprotected).  :returns: the final
    state, or None when no holder ran."""
    st = load(dom, base)
    if st is None or not st["alive"]:
        return None
    os.kill(st["pid"], signal.SIGUSR2)
    return _wait_gone(dom, st, timeout, base)


class CheckpointCounter(object):
    """Committed checkpoints in xl's Remus stream (libxl CHECKPOINT_END
    records), for any guest type (the suspend point that disk replication
    needs, and proves for PV guests only, plays no part here).  A stream it
    cannot follow stops the count (``error``); the bytes are the caller's
    to forward in any case."""

    def __init__(self):
        from xen_remus_ext.replication import stream
        self._stream = stream
        self.scanner = stream.StreamScanner()
        self.committed = 0
        self.error = None

    def feed(self, data):
        if self.error is not None:
            return
        s = self._stream
        try:
            for el in self.scanner.feed(data):
                if el.kind == s.LIBXL_RECORD and el.rtype == s.LIBXL_CHECKPOINT_END:
                    self.committed += 1
        except StreamFormatError as exc:
            self.error = str(exc)

    @property
    def count(self):
        return None if self.error is not None else self.committed


def xl_domain_exists(name, xl=("xl",)):
    """:returns: False only when ``xl domid NAME`` ran and did not find the
    domain (an xl that cannot run proves nothing: the copy is kept)."""
    try:
        with open(os.devnull, "wb") as null:
            return subprocess.call(list(xl) + ["domid", name], stdout=null, stderr=null) == 0
    except OSError as exc:
        LOG.warning("cannot ask xl whether %s exists: %s", name, exc)
        return True


def xl_destroy(name, xl=("xl",)):
    try:
        with open(os.devnull, "wb") as null:
            rc = subprocess.call(list(xl) + ["destroy", name], stdout=null, stderr=null)
    except OSError as exc:
        rc = exc
    if rc != 0:
        LOG.warning("xl destroy %s: %s", name, rc)
    return rc == 0


class Holder(object):
    """The holder's loop (one process per received stream).

    :param receiver_argv: xl's receiver (``xl migrate-receive -r``)
    :param dom: the domain's name (the copy is ``DOM--incoming``)
    :param stream_fd: the stream from the primary (our stdin)
    :param exists: ``(name) -> bool``, does the copy still exist
    :param destroy: ``(name) -> None``, destroy the copy
    :param poll: seconds between looks at the held copy
    :param on_started: called once the receiver runs
    """

    def __init__(self, receiver_argv, dom, stream_fd=0, base=None, exists=xl_domain_exists,
                 destroy=xl_destroy, poll=2.0, clock=time.time, on_started=None):
        self.receiver_argv = list(receiver_argv)
        self.dom = str(dom)
        self.stream_fd = stream_fd
        self.base = base
        self.exists = exists
        self.destroy = destroy
        self.poll = poll
        self.clock = clock
        self.on_started = on_started
        self.requests = []
        self.counter = CheckpointCounter()
        self.st = {}
        self._written = 0.0
        self._dirty = False

    def _save(self, force=True, **changes):
        """Write the state file: now (``force``), else at most every 0.5 s
        (a count that changed meanwhile is written by the next call)."""
        self.st.update(changes)
        self._dirty = True
        now = self.clock()
        if not force and now - self._written < 0.5:
            return
        self._written = now
        self._dirty = False
        self.st["checkpoints"] = self.counter.count
        if self.counter.error:
            self.st["stream_error"] = self.counter.error
        _write_state(state_path(self.dom, self.base), self.st)

    def _on_signal(self, what):
        def handler(signum, frame):
            self.requests.append(what)
        return handler

    def _select(self, fds, timeout):
        try:
            return select.select(fds, [], [], timeout)[0]
        except (select.error, OSError) as exc:     # EINTR from our own signals (2.7)
            if exc.args and exc.args[0] == errno.EINTR:
                return []
            raise

    def run(self):
        """:returns: the exit status for the holder process."""
        if not os.path.isdir(directory(self.base)):
            os.makedirs(directory(self.base))
        self.lock = claim(self.dom, self.base)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGUSR1, self._on_signal("release"))
        for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal("discard"))
        try:
            child = subprocess.Popen(self.receiver_argv, stdin=subprocess.PIPE, preexec_fn=guard.die_with_parent)
        except (IOError, OSError) as exc:
            raise ToolstackError("hold receive of %s: cannot run %s: %s" % (self.dom, self.receiver_argv[0], exc))
        self.child = child
        child_in = child.stdin.fileno()
        self.guard = guard.hold_open(child_in)
        if self.on_started is not None:
            self.on_started()
        self._save(state=RECEIVING, pid=os.getpid(), child=child.pid, guard=self.guard, started=self.clock(),
                   bytes=0, receiver=self.receiver_argv)
        LOG.info("receiving %s: %s (pid %d)", self.dom, " ".join(self.receiver_argv), child.pid)
        why = self._receive(child, child_in)
        if why is not None:
            return why
        if self.counter.count == 0:
            # nothing committed: xl's receiver has no consistent state to
            # resume and fails; let it clean up its partial copy
            LOG.warning("%s: the stream ended before its first checkpoint; not held", self.dom)
            self._end_guard()
            child.stdin.close()
            rc = child.wait()
            self._save(state=ENDED, rc=rc, reason="the stream ended before its first checkpoint",
                       ended=self.clock())
            return rc
        return self._hold(child)

    def _receive(self, child, child_in):
        """Copy the stream until it ends.  :returns: None at its end, else
        the exit status (discarded, or the receiver exited)."""
        from xen_remus_ext.replication.relay import write_all
        total = 0
        while True:
            if "discard" in self.requests:
                return self._discard(child, "asked while receiving")
            if "release" in self.requests:
                LOG.warning("%s: release asked while the stream still flows; ignored", self.dom)
                self.requests.remove("release")
            if child.poll() is not None:
                self._end_guard()
                self._save(state=ENDED, rc=child.returncode, bytes=total, ended=self.clock())
                LOG.info("%s: the receiver exited with %s while receiving", self.dom, child.returncode)
                return child.returncode
            if not self._select([self.stream_fd], 0.5):
                if self._dirty:
                    self._save(force=False)
                continue
            try:
                data = os.read(self.stream_fd, READ_MAX)
            except OSError as exc:
                if exc.errno in (errno.EINTR, errno.EAGAIN):
                    continue
                LOG.warning("%s: the stream failed: %s", self.dom, exc)
                data = b""
            if not data:
                self._save(bytes=total)
                return None
            try:
                write_all(child_in, data)
            except OSError as exc:
                LOG.warning("%s: writing to the receiver failed: %s", self.dom, exc)
                child.wait()
                continue
            total += len(data)
            before = self.counter.count
            self.counter.feed(data)
            self._save(force=self.counter.count != before and self.counter.count == 1, bytes=total)

    def _hold(self, child):
        self._save(state=HELD, broke=self.clock())
        LOG.warning("%s: the checkpoint stream ended after %s committed checkpoints; holding %s%s paused "
                    "until released", self.dom, self.counter.count, self.dom, INCOMING_SUFFIX)
        last_look = self.clock()
        while True:
            if "discard" in self.requests:
                return self._discard(child, "asked while held")
            if "release" in self.requests:
                t0 = self.clock()
                self._end_guard()
                self.child.stdin.close()       # xl: end of stream -> Remus failover, unpause
                rc = child.wait()
                self._save(state=RELEASED, rc=rc, released=t0, ended=self.clock())
                LOG.warning("%s: released; the receiver failed over and exited with %d after %.2f s",
                            self.dom, rc, self.clock() - t0)
                return rc
            if child.poll() is not None:
                self._end_guard()
                self._save(state=ENDED, rc=child.returncode, ended=self.clock())
                LOG.warning("%s: the receiver exited with %s while held", self.dom, child.returncode)
                return child.returncode
            if self.clock() - last_look >= self.poll:
                last_look = self.clock()
                if not self.exists(self.dom + INCOMING_SUFFIX):
                    return self._discard(child, "%s%s was destroyed" % (self.dom, INCOMING_SUFFIX))
            time.sleep(0.1)

    def _end_guard(self):
        err = guard.end(self.guard)
        if err:
            LOG.warning("%s: the %s", self.dom, err)

    def _discard(self, child, why):
        if child.poll() is None:
            child.kill()
        child.wait()
        self._end_guard()
        name = self.dom + INCOMING_SUFFIX
        if self.exists(name):
            self.destroy(name)
        self._save(state=DISCARDED, reason=why, ended=self.clock())
        LOG.warning("%s: backup copy discarded (%s)", self.dom, why)
        return 0


def receive_main(receiver_argv, dom, base=None):
    """``xen-remus hold receive``: our stdin is the stream, our stdout goes
    back to the primary (xl's receiver writes its banner there directly).
    xl's receiver keeps the link's stderr; the holder's own messages go to
    the log file only: once the link is gone, stderr leads nowhere."""
    if not receiver_argv:
        raise ToolstackError("hold receive: expected the receiver command after --, got none")
    if not os.path.isdir(directory(base)):
        os.makedirs(directory(base))
    handler = logging.FileHandler(log_path(dom, base))
    handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(message)s"))
    logging.getLogger("xen_remus_ext").addHandler(handler)
    logging.getLogger("xen_remus_ext").setLevel(logging.INFO)
    log_fd = os.open(log_path(dom, base), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def started():
        sys.stderr.flush()
        os.dup2(log_fd, 2)
    return Holder(receiver_argv, dom, base=base, on_started=started).run()
