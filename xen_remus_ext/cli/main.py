"""``xen-remus``: the command for xl hosts and scripts (the console script).

The commands themselves, their parser and ``main(argv)`` are in
:mod:`xen_remus_ext.cli.app`; this module is the process entry.
"""
from __future__ import absolute_import, division, print_function

import sys

from xen_remus_ext.cli.app import COMMAND_MODULES, build_parser, main

__all__ = ["COMMAND_MODULES", "build_parser", "main", "run"]


def run():
    sys.exit(main())


if __name__ == "__main__":
    run()
