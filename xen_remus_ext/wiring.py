"""Builds the real adapters.  Only this module and ``cli/`` choose them."""
from __future__ import absolute_import, division, print_function

import errno
import os
import socket
import subprocess
import threading
import time

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.ports import Clock, Runner


#: what xl itself checks before a command that changes anything (xl.c, XEND_LOCK)
XEND_LOCK_FILES = ("/var/lock/subsys/xend", "/var/lock/xend")
XEND_PID_FILE = "/var/run/xend.pid"
XEND_SOCKET = "/var/run/xend/xmlrpc.sock"


def xend_running(lock_files=XEND_LOCK_FILES, pid_file=XEND_PID_FILE, socket_path=XEND_SOCKET):
    """Why we think xend runs on this host, or None.

    Xen 4.1-4.4 install ``xl`` next to xend, so ``xl`` on PATH says nothing.
    xl refuses to act while xend's lock file exists (``/var/lock/subsys/xend``
    or ``/var/lock/xend``, made by xend's init script); the same files count
    here, and so do xend's pid file naming a live process and its XML-RPC
    socket accepting a connection (an xend started without the init script).
    """
    for path in lock_files:
        if os.path.exists(path):
            return "xend's lock file %s exists" % path
    try:
        with open(pid_file) as f:
            pid = int(f.read().split()[0])
        os.kill(pid, 0)
        return "xend's pid file %s names running process %d" % (pid_file, pid)
    except (IOError, OSError, ValueError, IndexError) as exc:
        if getattr(exc, "errno", None) == errno.EPERM:
            return "xend's pid file %s names a running process" % pid_file
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(2)
    try:
        sock.connect(socket_path)
        return "xend answers on %s" % socket_path
    except (socket.error, OSError):
        return None
    finally:
        sock.close()


def default_toolstack_kind(on_path, running=xend_running):
    """``xend`` when xend runs here, else ``xl`` when it is on PATH, else ``xend``."""
    if running() is not None:
        return "xend"
    return "xl" if on_path("xl") else "xend"


class SystemClock(Clock):
    def now(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(seconds)


class SubprocessRunner(Runner):
    """Runs argv lists with subprocess; no shell, ever.

    The child gets none of our other descriptors (inside xend that would be
    its sockets: Python 2.7's ``close_fds`` defaults to False) and, without
    ``input``, /dev/null as stdin.  ``timeout`` (seconds) kills it and raises
    :class:`ToolstackError`.
    """

    def run(self, argv, input=None, timeout=None, env=None):
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list, got %r" % (argv,))
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        null = None if input is not None else open(os.devnull, "rb")
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input is not None else null,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env,
                                    close_fds=True)
        finally:
            if null is not None:
                null.close()
        expired = []
        timer = None
        if timeout is not None:
            def kill():
                expired.append(True)
                try:
                    proc.kill()
                except OSError:
                    pass
            timer = threading.Timer(timeout, kill)
            timer.daemon = True
            timer.start()
        try:
            out, err = proc.communicate(input)
        finally:
            if timer is not None:
                timer.cancel()
                timer.join()   # no daemon thread left waiting at interpreter exit (2.7 prints a traceback)
        if expired:
            raise ToolstackError("%s: no result after %s s; killed" % (" ".join(argv), timeout))
        return proc.returncode, out, err
