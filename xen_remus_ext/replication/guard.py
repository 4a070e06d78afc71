"""Keeping xl's receiver from reading an end of stream its feeder did not mean.

``xl migrate-receive -r`` fails over (resumes the last checkpoint it holds)
as soon as its stdin ends.  A process that feeds that stdin and dies must
take the receiver with it instead: :func:`die_with_parent` in the
receiver's child (``PR_SET_PDEATHSIG`` = SIGKILL), and :func:`hold_open`
for the window the kernel leaves: a dying process's descriptors are closed
BEFORE its children are signalled, so without a second holder of the write
end the receiver could read the end of the stream, and start its failover,
in between.  With :func:`hold_open`'s guard the end comes only when the
guard dies too, by which time the receiver's SIGKILL is already pending.
Used by ``xen-remus replicate backup`` and ``xen-remus hold receive``.
"""
from __future__ import absolute_import, division, print_function

import ctypes
import ctypes.util
import os
import signal
import time

PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In a child (``preexec_fn``): SIGKILL when the parent dies; a child
    that cannot arrange that exits 127 rather than run unguarded."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        os._exit(127)


def hold_open(fd):
    """Fork a guard that keeps only a copy of ``fd`` (the write end of the
    receiver's stdin) open and dies with us; end it with :func:`end`
    before closing ``fd`` on purpose.  :returns: the guard's PID."""
    parent = os.getpid()
    pid = os.fork()
    if pid:
        return pid
    try:   # the guard: nothing but fd, until SIGKILL
        die_with_parent()
        if os.getppid() != parent:
            os._exit(0)
        for name in os.listdir("/proc/self/fd"):
            n = int(name)
            if n != fd:
                try:
                    os.close(n)
                except OSError:
                    pass
        for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        while True:
            time.sleep(3600)
    finally:
        os._exit(0)


def end(pid):
    """SIGKILL the guard ``pid`` and reap it.  :returns: None, or the error
    (a string) if it could not be signalled or reaped."""
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except OSError as exc:
        return "guard (pid %d): %s" % (pid, exc.strerror)
    return None
