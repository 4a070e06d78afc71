"""A double of ``xen.xm.main`` (Xen 4.1.0 / 4.4.0) for the xm registration tests.

Stands in for the real module, which cannot be imported here (it needs
``xen.lowlevel``, xend's config and the rest of xend's tree).  It keeps what
docs/xen-facts.md section 1 documents and nothing else, written afresh:

- the same table names: ``SUBCOMMAND_HELP`` (name -> (argstring, description)),
  ``SUBCOMMAND_OPTIONS`` (name -> tuple of (short, long, desc)), the group
  lists, ``all_commands`` as a NEW list built at import from the groups plus
  ``['shell', 'event-monitor']``, ``commands`` (name -> callable(args)),
  ``IMPORTED_COMMANDS`` loaded through ``xm_importcommand`` and ``aliases``;
- ``xm_lookup_cmd``: exact name, alias, ``help`` (long help, exit 0), then a
  unique prefix of two or more characters, else None;
- ``main``: ``-h``/``--help`` first -> long help, exit 0; anywhere later ->
  ``cmdHelp(argv[1])`` and exit 1; unknown command -> "Subcommand %s not
  found!" then short help, exit 1; else run the command, exit with its result;
- ``cmdHelp``: resolves a prefix against ``SUBCOMMAND_HELP``, prints
  ``Usage: xm <cmd> <args>``, a blank line, the description, then the option
  rows (``'  %-30s %-43s'``) and a blank line; without options, an imported
  command's ``help()``; an unknown command gets the short help;
- ``shortHelp`` walks ``common_commands``, ``longHelp`` walks
  ``all_commands``; names missing from ``SUBCOMMAND_HELP`` are skipped.

Tests reload this module (``six.moves.reload_module``) to get pristine tables.
``IMPORTED_PATH`` stands for the ``xen/xm/`` directory the real
``xm_importcommand`` imports from.
"""
from __future__ import absolute_import, division, print_function

import os
import sys
import textwrap

USAGE_HELP = "Usage: xm <subcommand> [args]\n\nControl, list, and manipulate Xen guest instances.\n"
USAGE_FOOTER = "<Domain> can either be the Domain Name or Id.\n"

#: the directory standing in for xen/xm/ (where IMPORTED_COMMANDS modules live)
IMPORTED_PATH = None

#: every command run records (name, args) here, so tests can see dispatch
CALLS = []

SUBCOMMAND_HELP = {
    "console": ("[-q|--quiet] <Domain>", "Attach to <Domain>'s console."),
    "create": ("<ConfigFile> [options] [vars]", "Create a domain based on <ConfigFile>."),
    "destroy": ("<Domain>", "Terminate a domain immediately."),
    "help": ("", "Display this message."),
    "list": ("[options] [Domain, ...]", "List information about all/some domains."),
    "migrate": ("<Domain> <Host>", "Migrate a domain to another machine."),
    "pause": ("<Domain>", "Pause execution of a domain."),
    "reboot": ("<Domain> [-wa]", "Reboot a domain."),
    "rename": ("<Domain> <NewDomainName>", "Rename a domain."),
    "reset": ("<Domain>", "Reset a domain."),
    "restore": ("<CheckpointFile> [-p]", "Restore a domain from a saved state."),
    "resume": ("<DomainName> [-p]", "Resume a Xend managed domain"),
    "save": ("[-c] <Domain> <CheckpointFile>", "Save a domain state to restore later."),
    "shell": ("", "Launch an interactive shell."),
    "info": ("[-c|--config]", "Get information about Xen host."),
    "sched-credit": ("[-d <Domain> [-w[=WEIGHT]|-c[=CAP]]]", "Get/set credit scheduler parameters."),
    "block-list": ("<Domain> [--long]", "List virtual block devices for a domain."),
}

SUBCOMMAND_OPTIONS = {
    "list": (
        ("-l", "--long", "Output all VM details in SXP"),
        ("", "--label", "Include security labels"),
    ),
    "save": (
        ("-c", "--checkpoint", "Leave domain running after creating snapshot"),
    ),
    "sched-credit": (
        ("-d DOMAIN", "--domain=DOMAIN", "Domain to modify"),
        ("-w WEIGHT", "--weight=WEIGHT", "Weight (int)"),
    ),
}

common_commands = ["console", "create", "destroy", "help", "list", "migrate", "pause",
                   "reboot", "reset", "restore", "resume", "save", "shell"]
domain_commands = ["console", "create", "destroy", "list", "migrate", "pause", "reboot",
                   "rename", "reset", "restore", "resume", "save"]
host_commands = ["info"]
scheduler_commands = ["sched-credit"]
device_commands = ["block-list"]
vnet_commands = []
security_commands = []
acm_commands = []
flask_commands = []
tmem_commands = []
cpupool_commands = []

all_commands = (domain_commands + host_commands + scheduler_commands + device_commands +
                vnet_commands + security_commands + acm_commands + flask_commands +
                tmem_commands + cpupool_commands + ["shell", "event-monitor"])


def load_source(name, path):
    """Load the Python file ``path`` as module ``name`` (its name may hold '-')."""
    try:
        import importlib.util as ilu
    except ImportError:  # Python 2.7
        import imp
        return imp.load_source(name, path)
    spec = ilu.spec_from_file_location(name, path)
    mod = ilu.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _wrap(text, width):
    return textwrap.wrap(text, width) or [""]


def cmdHelp(cmd):
    if cmd not in SUBCOMMAND_HELP:
        for name in SUBCOMMAND_HELP:
            if name[:len(cmd)] == cmd:
                cmd = name
                break
    try:
        args, desc = SUBCOMMAND_HELP[cmd]
    except KeyError:
        shortHelp()
        return
    print("Usage: xm %s %s" % (cmd, args))
    print()
    print(desc)
    try:
        for shortopt, longopt, odesc in SUBCOMMAND_OPTIONS[cmd]:
            if shortopt and longopt:
                label = "%s, %s" % (shortopt, longopt)
            else:
                label = shortopt or longopt
            lines = _wrap(odesc, 43)
            print("  %-30s %-43s" % (label, lines[0]))
            for line in lines[1:]:
                print(" " * 33 + line)
        print()
    except KeyError:
        if cmd in IMPORTED_COMMANDS:
            try:
                mod = _import_command(cmd)
            except ImportError:
                return
            helper = getattr(mod, "help", None)
            if helper:
                print(helper())


def _listing(names):
    for name in names:
        try:
            _args, desc = SUBCOMMAND_HELP[name]
        except KeyError:
            continue
        lines = _wrap(desc, 50)
        print(" %-20s %-50s" % (name, lines[0]))
        for line in lines[1:]:
            print(" " * 22 + line)


def shortHelp():
    print(USAGE_HELP)
    print("Common 'xm' commands:\n")
    _listing(common_commands)
    print()
    print(USAGE_FOOTER)
    print("For a complete list of subcommands run 'xm help'.")


def longHelp():
    print(USAGE_HELP)
    print("xm full list of subcommands:\n")
    _listing(all_commands)
    print()
    print(USAGE_FOOTER)


def _usage(cmd):
    if cmd:
        cmdHelp(cmd)
    else:
        shortHelp()


def usage(cmd=None):
    _usage(cmd)
    sys.exit(1)


def err(msg):
    sys.stderr.write("Error: %s\n" % (msg,))


def _recorder(name):
    def run(args):
        CALLS.append((name, list(args)))
        return 0
    return run


def _import_command(command):
    """Load ``<IMPORTED_PATH>/<command>.py`` (hyphens allowed), as the real
    ``__import__(command, ..., 'xen.xm')`` does from xen/xm/."""
    if IMPORTED_PATH is None:
        raise ImportError("No module named %s" % command)
    path = os.path.join(IMPORTED_PATH, command + ".py")
    if not os.path.exists(path):
        raise ImportError("No module named %s" % command)
    return load_source("xm_imported_" + command.replace("-", "_"), path)


def xm_importcommand(command, args):
    mod = _import_command(command)
    mod.main([command] + args)


commands = dict((name, _recorder(name)) for name in (
    "console", "destroy", "list", "pause", "reboot", "rename", "reset", "restore",
    "resume", "save", "shell", "info", "sched-credit", "block-list"))

IMPORTED_COMMANDS = ["create", "migrate"]


def _imported(name):
    return lambda args: xm_importcommand(name, args)


for _c in IMPORTED_COMMANDS:
    commands[_c] = _imported(_c)

aliases = {"vbd-list": "block-list"}


def xm_lookup_cmd(cmd):
    if cmd in commands:
        return commands[cmd]
    if cmd in aliases:
        return commands[aliases[cmd]]
    if cmd == "help":
        longHelp()
        sys.exit(0)
    if len(cmd) > 1:
        found = [commands[c] for c in commands if c[:len(cmd)] == cmd]
        if len(found) == 1:
            return found[0]
    return None


def _run_cmd(cmd, cmd_name, args):
    # the real one also opens the xend connection lazily and maps xend's
    # faults to messages; a SystemExit becomes the exit status
    try:
        return True, cmd(args)
    except SystemExit as code:
        return code.code == 0, code.code


def main(argv=sys.argv):
    if len(argv) < 2:
        usage()
    for flag in ("--help", "-h"):
        if flag in argv[1:]:
            if flag == argv[1]:
                longHelp()
                sys.exit(0)
            usage(argv[1])
    name = argv[1]
    cmd = xm_lookup_cmd(name)
    if cmd:
        _ok, rc = _run_cmd(cmd, name, argv[2:])
        sys.exit(rc)
    err("Subcommand %s not found!" % name)
    usage()
