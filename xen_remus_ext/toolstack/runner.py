"""The :class:`ports.Runner` over subprocess: argv lists, never a shell."""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import threading

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.ports import Runner


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
