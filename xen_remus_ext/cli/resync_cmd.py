"""Subcommands of ``xen-remus`` (placeholder: registers nothing yet)."""
from __future__ import absolute_import, division, print_function


def register(subparsers):
    """Add this module's subcommands to ``subparsers``."""
