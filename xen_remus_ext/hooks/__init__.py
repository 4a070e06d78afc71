"""The save/restore path: xend's device-migrate steps and xend-config.sxp.

``migrate``: what each step does; ``tool``: the external-migration-tool
process; ``xend_config``: reading and editing xend-config.sxp (the form
positions for those edits come from ``config.sxp.parse(..., spans=)``).
"""
from __future__ import absolute_import, division, print_function
