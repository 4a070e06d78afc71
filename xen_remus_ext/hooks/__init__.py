"""``python -m xen_remus_ext.hooks``: a second name of the xend hook's entry.

The hook itself lives in :mod:`xen_remus_ext.xend.hook`.  This package only
keeps the command line ``<python> -m xen_remus_ext.hooks`` working, which
``xen-remus hook-config install`` wrote into xend-config.sxp's
``external-migration-tool`` on hosts without a ``xen-remus`` script on PATH.
"""
from __future__ import absolute_import, division, print_function
