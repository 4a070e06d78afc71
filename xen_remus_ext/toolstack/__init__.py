"""Toolstack adapters: xend (XML-RPC), xl (CLI), xenstore (pyxs), tap-ctl.

``xend`` and ``xl``: the :class:`~xen_remus_ext.ports.Toolstack` of each
toolstack; ``processes``: the background Remus sender both of them start and
stop; ``runner``: the subprocess :class:`~xen_remus_ext.ports.Runner`;
``xenstore``: the XenStore port over pyxs; ``tapctl``: blktap2's ``tap-ctl``.
"""
from __future__ import absolute_import, division, print_function
