"""xm integration: the ``xm remus-protect|remus-failback|remus-resync|remus-status`` subcommands.

``commands`` says what they are and runs them through ``xen-remus``;
``register`` puts them into ``xen.xm.main``'s tables; ``entry`` is the
``xm-remus`` script; ``imported`` writes the modules for xm's
``IMPORTED_COMMANDS`` route (docs/xm.md).
"""
from __future__ import absolute_import, division, print_function
