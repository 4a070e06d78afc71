"""Register the ``xm remus-*`` subcommands into ``xen.xm.main``'s own tables.

docs/xen-facts.md section 1: xm dispatches through module-level tables.  A
command behaves like every other xm subcommand only when it is in all of:

- ``commands`` (name -> callable(args); the result is xm's exit status),
- ``SUBCOMMAND_HELP`` (``xm help`` listings, ``Usage: xm <cmd> <args>``),
- ``SUBCOMMAND_OPTIONS`` (the option rows of ``xm <cmd> --help``),
- ``domain_commands`` AND ``all_commands``: the latter is a separate list
  built at import, so appending to ``domain_commands`` alone would leave
  ``xm help`` silent.

Prefix matching (``xm remus-f``) then works by itself, since xm matches
against ``commands``.  :func:`register` is idempotent and changes nothing
but these tables; it never contacts xend.
"""
from __future__ import absolute_import, division, print_function

import logging

from xen_remus_ext.xm import commands as xm_commands

log = logging.getLogger(__name__)

#: the tables register() needs; a module lacking one is not xen.xm.main
REQUIRED = ("commands", "SUBCOMMAND_HELP", "SUBCOMMAND_OPTIONS",
            "domain_commands", "all_commands")


def check_xm_module(xm_main):
    """:raises ToolstackError: ``xm_main`` lacks one of xm's tables."""
    from xen_remus_ext.errors import ToolstackError
    missing = [t for t in REQUIRED if not hasattr(xm_main, t)]
    if missing:
        raise ToolstackError("%s: expected xm's tables %s, missing %s"
                             % (getattr(xm_main, "__name__", xm_main), ", ".join(REQUIRED),
                                ", ".join(missing)))


class _Parser(object):
    """The ``xen-remus`` parser, built on first use: every ``xm`` run (``xm
    list`` too) registers our commands, and only ours need the parser."""

    def __init__(self, parser=None):
        self._parser = parser

    def get(self):
        if self._parser is None:
            self._parser = xm_commands.build_cli_parser()
        return self._parser


class LazyOptions(object):
    """xm's ``SUBCOMMAND_OPTIONS`` rows of one command, read from the parser
    when xm first iterates them (``cmdHelp`` only iterates)."""

    def __init__(self, cmd, parser):
        self._cmd = cmd
        self._parser = parser
        self._rows = None

    def rows(self):
        if self._rows is None:
            sub = xm_commands.subparser_for(self._parser.get(), self._cmd.target)
            self._rows = xm_commands.options_for(sub) if sub is not None else ()
        return self._rows

    def __iter__(self):
        return iter(self.rows())

    def __len__(self):
        return len(self.rows())

    def __getitem__(self, index):
        return self.rows()[index]

    def __eq__(self, other):
        return tuple(self) == tuple(other)

    def __ne__(self, other):
        return not self == other

    __hash__ = None

    def __repr__(self):
        return "LazyOptions(%r)" % (self._cmd.name,)


def _handler(xm_main, cmd, main_fn, parser):
    def handler(args):
        rc = xm_commands.run(cmd.name, args, main_fn=main_fn, parser=parser.get())
        if rc == 2:  # a usage error: show xm's own help for the command as well
            usage = getattr(xm_main, "_usage", None)
            if usage is not None:
                usage(cmd.name)
        return rc
    handler.__name__ = "xm_" + cmd.name.replace("-", "_")
    handler.__doc__ = cmd.description
    return handler


def register(xm_main, main_fn=None, parser=None):
    """Insert the remus subcommands into ``xm_main`` (``xen.xm.main``).

    :param main_fn: what runs the command (default ``xen_remus_ext.cli.app.main``)
    :param parser: the ``xen-remus`` parser to read options from (default:
                   built the first time one of our commands or its help runs)
    :returns: the list of names registered
    :raises ToolstackError: ``xm_main`` is not an xm main module
    """
    check_xm_module(xm_main)
    lazy = _Parser(parser)
    names = []
    for cmd in xm_commands.COMMANDS:
        xm_main.SUBCOMMAND_HELP[cmd.name] = (cmd.argstring, cmd.description)
        xm_main.SUBCOMMAND_OPTIONS[cmd.name] = LazyOptions(cmd, lazy)
        xm_main.commands[cmd.name] = _handler(xm_main, cmd, main_fn, lazy)
        for table in ("domain_commands", "all_commands"):
            lst = getattr(xm_main, table)
            if cmd.name not in lst:
                lst.append(cmd.name)
        names.append(cmd.name)
    log.debug("registered xm subcommands %s", ", ".join(names))
    return names
