"""``python -m xen_remus_ext.xm ARGS``: the same as the ``xm-remus`` script."""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.xm import entry

sys.exit(entry.main([sys.argv[0]] + sys.argv[1:]))
