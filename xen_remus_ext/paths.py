"""Where the package keeps its host-local state.

``$XEN_REMUS_STATE_DIR`` (tests and the simulator point it at a temp dir),
else /var/lib/xen-remus-ext: disk generations (``meta/``), failback journals
(``failback/``), Remus sender PIDs (``remus/``), hook marks (``hook/``).
"""
from __future__ import absolute_import, division, print_function

import os

DEFAULT_STATE_DIR = "/var/lib/xen-remus-ext"


def state_dir():
    """:returns: the state directory in force now (read at each call)."""
    return os.environ.get("XEN_REMUS_STATE_DIR") or DEFAULT_STATE_DIR
