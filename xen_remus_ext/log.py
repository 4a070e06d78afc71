"""Logging setup: /var/log/xen/remus-ext.log (xend's habit) and stderr.

Library code only calls ``logging.getLogger(__name__)``; the CLI calls
:func:`setup` once.  ``XEN_REMUS_LOG`` overrides the file (empty: no file).
"""
from __future__ import absolute_import, division, print_function

import logging
import logging.handlers
import os
import sys

DEFAULT_LOG = "/var/log/xen/remus-ext.log"
FORMAT = "[%(asctime)s %(process)d] %(levelname)s (%(name)s) %(message)s"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at emit time, not at setup time
    (a test harness or a daemonising caller may swap or close the old one)."""

    def __init__(self):
        logging.StreamHandler.__init__(self, sys.stderr)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


class _PrivateFileHandler(logging.handlers.WatchedFileHandler):
    """The log file, created (and re-created after a rotation) with mode
    0640, and tightened to it when found looser: it names disks, hosts and
    failures, which are not for every user of the machine."""

    MODE = 0o640

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, self.MODE)
        try:
            st = os.fstat(fd)
            if st.st_mode & 0o777 & ~self.MODE:
                os.fchmod(fd, st.st_mode & self.MODE)
        finally:
            os.close(fd)
        return logging.handlers.WatchedFileHandler._open(self)


def log_path():
    return os.environ.get("XEN_REMUS_LOG", DEFAULT_LOG)


def setup(verbose=0, quiet=False):
    root = logging.getLogger("xen_remus_ext")
    if getattr(root, "_xre_setup", False):
        return root
    root.setLevel(logging.DEBUG)
    err = _StderrHandler()
    err.setLevel(logging.DEBUG if verbose > 1 else logging.INFO if verbose else
                 logging.ERROR if quiet else logging.WARNING)
    err.setFormatter(logging.Formatter("xen-remus: %(message)s"))
    root.addHandler(err)
    path = log_path()
    if path:
        try:
            d = os.path.dirname(path)
            if d and not os.path.isdir(d):
                os.makedirs(d)
            # reopens the file when logrotate moved it (debian/xen-remus-ext.logrotate)
            fh = _PrivateFileHandler(path)
            fh.setLevel(logging.DEBUG)
            fh.setFormatter(logging.Formatter(FORMAT))
            root.addHandler(fh)
        except (IOError, OSError):
            pass  # unprivileged users still get stderr
    root._xre_setup = True
    return root
