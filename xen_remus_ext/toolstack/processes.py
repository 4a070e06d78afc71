"""The Remus process manager shared by the xend and xl adapters.

:class:`RemusProcesses` keeps the long-lived Remus sender (``remus``
on xend, ``xl remus`` on xl) started in the background and stopped with
SIGINT by the PID we started.  Remus outlives the command that started it
(``xen-remus failback`` exits while protection goes on), so the PID is kept
in ``<state dir>/remus/<dom>.pid`` (state dir: ``$XEN_REMUS_STATE_DIR``,
else /var/lib/xen-remus-ext) next to the sender's log ``<dom>.log``; a
later process finds it there.  A PID counts as ours only while
``/proc/<pid>/cmdline`` still ends with the arguments we recorded (the
program part may differ: an interpreter or ``env`` may run it), so a
recycled PID is never signalled.
"""
from __future__ import absolute_import, division, print_function

import json
import logging
import os
import re
import signal
import subprocess
import time

from xen_remus_ext.compat import atomic_write, pid_exists, to_bytes, to_text
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.paths import state_dir

LOG = logging.getLogger(__name__)

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            raw = f.read()
    except (IOError, OSError):
        return None
    return [to_text(a, errors="replace") for a in raw.split(b"\0")[:-1]]


def _own_session():
    """The sender's ``preexec_fn``: its own session (the caller's terminal
    and process group are not its), and SIGINT and SIGQUIT at their default.
    A command started in the background by a shell without job control (a
    script's ``&``, some init systems) inherits both ignored, and a sender
    that ignores SIGINT would not stop on :meth:`RemusProcesses.stop` (xend's
    ``remus`` script stops on KeyboardInterrupt) until it is killed."""
    os.setsid()
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def _alive(pid):
    if not pid_exists(pid):
        return False
    # a zombie child of ours still answers kill(0): reap it if it is ours
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except OSError:
        done = 0
    return done == 0


class RemusProcesses(object):
    """Background Remus senders keyed by the domain name/id they protect.

    :param directory: where pid and log files go (default ``state_dir()/remus``).
    """

    def __init__(self, directory=None):
        self.directory = directory or os.path.join(state_dir(), "remus")

    def _key(self, dom):
        return _SAFE.sub("_", str(dom))

    def _pidfile(self, dom):
        return os.path.join(self.directory, "%s.pid" % self._key(dom))

    def log_path(self, dom):
        return os.path.join(self.directory, "%s.log" % self._key(dom))

    def _record(self, dom):
        try:
            with open(self._pidfile(dom), "rb") as f:
                rec = json.loads(to_text(f.read()))
            return int(rec["pid"]), list(rec["match"])
        except (IOError, OSError, ValueError, KeyError, TypeError):
            return None

    def pid(self, dom):
        """:returns: the PID of our sender for ``dom`` while it runs, else None."""
        rec = self._record(dom)
        if rec is None:
            return None
        pid, match = rec
        if not _alive(pid):
            return None
        cmd = _cmdline(pid)
        if cmd is None or (match and cmd[-len(match):] != match):
            return None
        return pid

    def start(self, dom, argv, env=None, match=None):
        """Start ``argv`` in its own session (SIGINT at its default, whatever
        this process ignores), output to :meth:`log_path`.

        :param match: the trailing arguments that identify the process later
            (default: ``argv[1:]``).

        :raises ToolstackError: one already runs for ``dom``, or exec failed.
        """
        running = self.pid(dom)   # once: a sender may exit between two looks
        if running is not None:
            raise ToolstackError("remus for %s: expected no sender running, found pid %d" % (dom, running))
        if not os.path.isdir(self.directory):
            os.makedirs(self.directory)
        full_env = dict(os.environ)
        full_env.update(env or {})
        logf = open(self.log_path(dom), "ab")
        null = open(os.devnull, "rb")
        try:
            proc = subprocess.Popen(list(argv), stdin=null, stdout=logf, stderr=subprocess.STDOUT,
                                    env=full_env, preexec_fn=_own_session, close_fds=True)
        except (IOError, OSError) as exc:
            raise ToolstackError("remus for %s: cannot run %s: %s" % (dom, argv[0], exc))
        finally:
            logf.close()
            null.close()
        self._proc = proc  # keep the Popen so that the child is reaped in this process
        match = list(argv[1:] if match is None else match)
        atomic_write(self._pidfile(dom), to_bytes(json.dumps({"pid": proc.pid, "argv": list(argv),
                                                              "match": match})), 0o644)
        # a sender that dies at once (bad argv, unknown domain) is an error now, not later
        deadline = time.time() + 0.5
        while time.time() < deadline:
            if proc.poll() is not None:
                self._forget(dom)
                raise ToolstackError("remus for %s: %s exited with %d: %s"
                                     % (dom, " ".join(argv), proc.returncode, self.tail(dom)))
            time.sleep(0.05)
        LOG.info("remus for %s started: pid %d (%s)", dom, proc.pid, " ".join(argv))
        return proc.pid

    def tail(self, dom, limit=2000):
        try:
            with open(self.log_path(dom), "rb") as f:
                data = f.read()
        except (IOError, OSError):
            return ""
        return to_text(data[-limit:], errors="replace").strip()

    def _forget(self, dom):
        try:
            os.unlink(self._pidfile(dom))
        except OSError:
            pass

    def stop(self, dom, timeout=10.0):
        """SIGINT our sender for ``dom`` and wait for it; SIGKILL after ``timeout``.

        :returns: True when a sender was stopped, False when none ran.
        """
        pid = self.pid(dom)
        if pid is None:
            self._forget(dom)
            return False
        os.kill(pid, signal.SIGINT)
        deadline = time.time() + timeout
        while _alive(pid) and time.time() < deadline:
            time.sleep(0.05)
        if _alive(pid):
            LOG.warning("remus for %s: pid %d ignored SIGINT for %.0f s, killing it", dom, pid, timeout)
            os.kill(pid, signal.SIGKILL)
            while _alive(pid):
                time.sleep(0.02)
        self._forget(dom)
        return True

    def running(self, dom):
        return self.pid(dom) is not None


def sender_process_here(dom, proc="/proc"):
    """:returns: True when a Remus sender for ``dom`` runs on this host,
    whoever started it: ``xl remus [opts] DOM HOST`` (also when run here over
    ssh by the peer) or xend's ``remus [opts] DOM HOST`` script."""
    try:
        pids = [p for p in os.listdir(proc) if p.isdigit()]
    except OSError:
        return False
    for pid in pids:
        try:
            with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
                argv = [to_text(a) for a in f.read().split(b"\0") if a]
        except (IOError, OSError):
            continue
        if len(argv) < 3 or str(dom) not in argv:
            continue
        names = [os.path.basename(a) for a in argv[:3]]
        if "xl" in names and "remus" in argv[1:3]:
            return True
        if "remus" in names and not any("ssh" == n for n in names):
            return True
    return False
