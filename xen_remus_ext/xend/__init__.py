"""Code that runs inside xend (Xen 4.1-4.4), loaded by patches/.

``domain``: the ``XendDomain.domain_remus_*`` methods xend exports as
``xend.domain.remus_*``; ``blktap``: the override of
``Blktap2Controller.migrate`` (the in-process device-migrate hook).
Nothing here imports ``xen.*``: the patches pass xend's classes in.
"""
from __future__ import absolute_import, division, print_function
