"""Builds the real adapters.  Only this module and ``cli/`` choose them."""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import time

from xen_remus_ext.ports import Clock, Runner


class SystemClock(Clock):
    def now(self):
        return time.time()

    def sleep(self, seconds):
        time.sleep(seconds)


class SubprocessRunner(Runner):
    """Runs argv lists with subprocess; no shell, ever."""

    def run(self, argv, input=None, timeout=None, env=None):
        if isinstance(argv, (str, bytes)):
            raise TypeError("argv must be a list, got %r" % (argv,))
        full_env = None
        if env:
            full_env = dict(os.environ)
            full_env.update(env)
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if input is not None else None,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        out, err = proc.communicate(input)
        return proc.returncode, out, err
