"""A clean-up registry: every namespace, mount, process and directory the
chaos code creates is registered here and undone in reverse order, on
success, on failure, at interpreter exit and on SIGTERM.

Only what was registered is touched: processes by the PID we started,
namespaces and mounts by the name we gave them.
"""
from __future__ import absolute_import, division, print_function

import atexit
import errno
import logging
import os
import shutil
import signal
import subprocess
import threading

LOG = logging.getLogger(__name__)


def run(argv):
    """Run a command (argv list); :returns: its stdout text.

    :raises OSError: the command failed (its stderr in the message).
    """
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    if proc.returncode:
        raise OSError(errno.EIO, "%s: exit %d: %s" % (" ".join(argv), proc.returncode,
                                                      err.decode("utf-8", "replace").strip()))
    return out.decode("utf-8", "replace")


class Registry(object):
    """LIFO list of undo actions.  A context manager."""

    def __init__(self):
        self._items = []
        self._lock = threading.Lock()
        self._closed = False
        atexit.register(self.close)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def add(self, what, fn, *args):
        """Register ``fn(*args)``; :returns: a token for :meth:`undo`."""
        item = [what, fn, args]
        with self._lock:
            self._items.append(item)
        return item

    def undo(self, token):
        """Run one registered action now (and forget it)."""
        with self._lock:
            if token not in self._items:
                return
            self._items.remove(token)
        self._call(token)

    def forget(self, token):
        with self._lock:
            if token in self._items:
                self._items.remove(token)

    @staticmethod
    def _call(item):
        what, fn, args = item
        try:
            fn(*args)
        except (OSError, IOError) as exc:
            LOG.warning("cleanup %s: %s", what, exc)

    def process(self, proc):
        """Kill ``proc`` (a Popen we started) by its PID at clean-up."""
        return self.add("pid %d" % proc.pid, kill_proc, proc)

    def netns(self, name):
        run(["ip", "netns", "add", name])
        return self.add("netns %s" % name, delete_netns, name)

    def tmpfs(self, path, size):
        if not os.path.isdir(path):
            os.makedirs(path)
        run(["mount", "-t", "tmpfs", "-o", "size=%d,mode=0700" % size, "xre-chaos", path])
        return self.add("mount %s" % path, umount, path)

    def tree(self, path):
        return self.add("dir %s" % path, shutil.rmtree, path, True)

    def close(self):
        with self._lock:
            if self._closed:
                return
            self._closed = True
            items, self._items = self._items[::-1], []
        for item in items:
            self._call(item)
        try:
            atexit.unregister(self.close)  # novm
        except AttributeError:
            pass


def kill_proc(proc):
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except OSError as exc:
            if exc.errno != errno.ESRCH:
                raise
    proc.wait()
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except (IOError, OSError):
                pass


def delete_netns(name):
    if os.path.exists(os.path.join("/var/run/netns", name)):
        run(["ip", "netns", "delete", name])


def umount(path):
    try:
        run(["umount", path])
    except OSError:
        run(["umount", "-l", path])
