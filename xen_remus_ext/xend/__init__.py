"""The xend integration (Xen 4.1-4.4): everything xend loads or runs.

``hook``: what each device-migrate step does for a domain under failback
(send the final disk delta while the domain is suspended); ``hook_tool``: the
``external-migration-tool`` process xend runs for each step
(``xen-remus hook``, or the lean ``python -m xen_remus_ext.xend.hook_tool``);
``xend_config``: reading and editing xend-config.sxp (``hook-config``);
``domain``: the ``XendDomain.domain_remus_*`` methods xend exports as
``xend.domain.remus_*``; ``blktap``: the override of
``Blktap2Controller.migrate`` (the in-process device-migrate hook).
``domain`` and ``blktap`` are loaded into xend by patches/; nothing here
imports ``xen.*``: the patches pass xend's classes in.

The client side, which drives xend over XML-RPC from outside, is the
``toolstack.xend`` adapter.
"""
from __future__ import absolute_import, division, print_function
