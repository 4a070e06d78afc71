"""The ``xen-remus`` command line as a library: its parser and ``main(argv)``.

Each subcommand lives in its own module under ``cli/`` exposing
``register(subparsers)``, which adds its parser and sets ``func(args)``
returning the exit status.  Exit codes: 0 ok, 1 failure, 2 usage.

Two front ends use it: the ``xen-remus`` script (``cli/main.py``) and the
xm front end (``xm/``), which runs the same commands inside ``xm`` and reads
their options from this parser.
"""
from __future__ import absolute_import, division, print_function

import argparse
import importlib
import logging
import sys

from xen_remus_ext import __version__
from xen_remus_ext import log as xlog
from xen_remus_ext.errors import XenRemusError

#: modules under xen_remus_ext.cli, in the order ``--help`` lists them
COMMAND_MODULES = (
    "config_cmd",     # config show|check|reverse
    "resync_cmd",     # resync, receive, verify
    "failback_cmd",   # failback, protect, resync-domain, remus-sender, status
    "meta_cmd",       # meta show|invalidate|forget|create
    "supervise_cmd",  # supervise (generation rotation on real hosts)
    "sim_cmd",        # sim xenstored|host|cleanup, demo
    "hook_cmd",       # hook (external-migration-tool), hook-config, xm-modules
    "ocf_cmd",        # ocf ACTION (the Pacemaker agent)
    "replicate_cmd",  # replicate serve|relay|backup (disk replication for xl remus)
    "hold_cmd",       # hold receive|release|discard|show (an xl backup waits for promote)
)


class _Version(argparse.Action):
    """``--version`` on stdout with exit 0 (argparse on 2.7 prints it to stderr)."""

    def __init__(self, option_strings, version=None, dest=argparse.SUPPRESS, default=argparse.SUPPRESS,
                 help="show the version and exit"):
        super(_Version, self).__init__(option_strings=option_strings, dest=dest, default=default, nargs=0,
                                       help=help)
        self.version = version

    def __call__(self, parser, namespace, values, option_string=None):
        sys.stdout.write("%s\n" % (self.version,))
        sys.stdout.flush()
        parser.exit(0)


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        sys.stderr.write("%s: error: %s\n" % (self.prog, message))
        sys.exit(2)


def build_parser():
    parser = _Parser(prog="xen-remus",
                     description="Remus failback, resync and re-protect for Xen (xend and xl).")
    parser.add_argument("--version", action=_Version, version="xen-remus %s" % __version__)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output on stderr")
    parser.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMAND_MODULES:
        mod = importlib.import_module("xen_remus_ext.cli." + name)
        mod.register(sub)
    return parser


def main(argv=None):
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:  # argparse on 2.7 would call this "too few arguments"
        parser.print_help(sys.stderr)
        return 2
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    xlog.setup(verbose=args.verbose, quiet=args.quiet)
    try:
        return args.func(args) or 0
    except XenRemusError as exc:
        logging.getLogger("xen_remus_ext").debug("failed", exc_info=True)
        sys.stderr.write("xen-remus: %s\n" % (exc,))
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("xen-remus: interrupted\n")
        return 130
    except (IOError, OSError) as exc:
        sys.stderr.write("xen-remus: %s\n" % (exc,))
        return 1
