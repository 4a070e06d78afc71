"""``python -m xen_remus_ext.hooks -type CLASS -step N -host DST -domname NAME [-recover]``."""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.xend import hook_tool

sys.exit(hook_tool.main())
