"""The ``xm remus-*`` subcommands: what they are called, and how they run.

Each xm subcommand is the ``xen-remus`` subcommand of the same job, run in
the xm process with the xend toolstack (docs/xen-facts.md section 1):

=================  ===========================  ==========================
xm                 xen-remus                    arguments
=================  ===========================  ==========================
remus-protect      protect                      ``<Domain> <Host> [opts]``
remus-failback     failback                     ``<Domain> <Host> [opts]``
remus-resync       resync-domain                ``<Domain> <Host> [opts]``
remus-status       status                       ``[Domain] [opts]``
=================  ===========================  ==========================

The option rows xm prints for ``xm <cmd> --help`` are read from the
``xen-remus`` argparse parser, so the two commands cannot drift apart.
"""
from __future__ import absolute_import, division, print_function

import argparse
import collections
import sys

from xen_remus_ext.errors import ProgrammerError


class XmCommand(collections.namedtuple("XmCommand", "name target argstring description")):
    """One xm subcommand: ``name`` in xm, ``target`` in xen-remus."""

    __slots__ = ()


COMMANDS = (
    XmCommand("remus-protect", "protect", "<Domain> <Host> [options]",
              "Protect <Domain>, running here, with Remus toward <Host>: create and "
              "seed the backup's disk copies, then start Remus."),
    XmCommand("remus-failback", "failback", "<Domain> <Host> [options]",
              "Bring <Domain>, running unprotected here after a Remus failover, "
              "home to <Host> with its disk changes, and protect it with Remus again."),
    XmCommand("remus-resync", "resync-domain", "<Domain> <Host> [options]",
              "Bring <Host>'s copy of <Domain>'s Remus disks up to date from "
              "this host, live, sending only the blocks that differ."),
    XmCommand("remus-status", "status", "[Domain] [options]",
              "Show Remus protection, failback and resync state of all/some domains."),
)

BY_NAME = dict((c.name, c) for c in COMMANDS)

#: the toolstack xm's commands drive
TOOLSTACK = "xend"


def build_cli_parser():
    """:returns: the ``xen-remus`` argparse parser (built fresh)."""
    from xen_remus_ext.cli import app
    return app.build_parser()


def subparser_for(parser, target):
    """:returns: the argparse parser of ``xen-remus <target>``, or None when
    this build has no such subcommand."""
    for action in parser._actions:  # argparse keeps no public accessor
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(target)
    return None


def _expand_help(action, prog):
    text = action.help or ""
    if "%(" in text:
        params = dict(vars(action), prog=prog)
        for key in list(params):
            if params[key] is argparse.SUPPRESS:
                del params[key]
        try:
            text = text % params
        except (KeyError, TypeError, ValueError):
            pass  # leave the raw text rather than hide the option
    return " ".join(text.split())


def options_for(subparser):
    """xm's option rows for ``subparser``.

    :returns: tuple of ``(shortopt, longopt, desc)`` in xm's
              ``SUBCOMMAND_OPTIONS`` form: ``('-r RATE', '--rate=RATE', ...)``
              for options taking a value, ``('-n', '--dry-run', ...)`` for flags.
    """
    rows = []
    for action in subparser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._HelpAction):
            continue
        shorts = [o for o in action.option_strings if not o.startswith("--")]
        longs = [o for o in action.option_strings if o.startswith("--")]
        short = shorts[0] if shorts else ""
        long_ = longs[0] if longs else ""
        if action.nargs != 0:
            metavar = action.metavar
            if isinstance(metavar, tuple):
                metavar = " ".join(metavar)
            metavar = metavar or action.dest.upper()
            short = "%s %s" % (short, metavar) if short else ""
            long_ = "%s=%s" % (long_, metavar) if long_ else ""
        rows.append((short, long_, _expand_help(action, subparser.prog)))
    return tuple(rows)


def _has_option(subparser, option):
    for action in subparser._actions:
        if option in action.option_strings:
            return True
    return False


def _given(args, option):
    return any(a == option or a.startswith(option + "=") for a in args)


def xen_remus_argv(cmd, args, subparser=None):
    """Translate ``xm <cmd.name> ARGS`` into the ``xen-remus`` argv.

    :param cmd: an :class:`XmCommand`
    :param args: xm's argv after the subcommand name
    :param subparser: the target's parser (to learn whether it takes
                      ``--toolstack``); None: pass the arguments through
    """
    argv = [cmd.target]
    if subparser is not None and _has_option(subparser, "--toolstack") \
            and not _given(args, "--toolstack"):
        argv += ["--toolstack", TOOLSTACK]
    return argv + list(args)


def run(name, args, main_fn=None, parser=None):
    """Run ``xm <name> ARGS`` through the ``xen-remus`` command, in process.

    :param main_fn: what runs a ``xen-remus`` command line (``cli.app.main``) taking argv
                    and returning the exit status
    :returns: the exit status (0 ok, 1 failure, 2 usage)
    """
    try:
        cmd = BY_NAME[name]
    except KeyError:
        raise ProgrammerError("xm command: expected one of %s, got %r"
                              % (", ".join(sorted(BY_NAME)), name))
    if main_fn is None:
        from xen_remus_ext.cli import app
        main_fn = app.main
    if parser is None:
        parser = build_cli_parser()
    sub = subparser_for(parser, cmd.target)
    if sub is None:
        sys.stderr.write("xm %s: this xen-remus-ext build has no 'xen-remus %s' command\n"
                         % (name, cmd.target))
        return 1
    try:
        rc = main_fn(xen_remus_argv(cmd, args, sub))
    except SystemExit as exc:  # argparse's usage errors and --help
        rc = exc.code
    if rc is None:
        rc = 0
    if not isinstance(rc, int):
        sys.stderr.write("%s\n" % (rc,))
        rc = 1
    return rc
