"""``xen-remus hook``, ``hook-config`` and ``xm-modules``: the xend side.

- ``hook -type CLASS -step N -host DST -domname NAME [-recover]``: the
  external-migration-tool xend runs at each device-migrate step
  (xend/hook.py).
- ``hook-config show|install|uninstall [--config FILE]``: read xend-config.sxp
  (relocation port, hosts-allow, the tool) and install or remove the tool.
- ``xm-modules install|remove [--dir DIR]``: the xen/xm/remus-*.py modules of
  xm's IMPORTED_COMMANDS route (docs/xm.md).
- ``xend-relay [--socket PATH]``: joins stdin/stdout to this host's xend
  Unix socket; a peer reaches this xend as ``ssh HOST xen-remus xend-relay``.
"""
from __future__ import absolute_import, division, print_function

import json
import sys

from xen_remus_ext.errors import ConfigError, ToolstackError


def register(subparsers):
    """Add this module's subcommands to ``subparsers``."""
    p = subparsers.add_parser(
        "hook", help="xend's external-migration-tool (run by xend, not by hand)",
        description="Run by xend at each device-migrate step; at step 2 of a tap/tap2 disk "
                    "it sends the final disk delta of a failback and returns once the "
                    "peer acknowledged it.")
    p.add_argument("-type", dest="devclass", required=True, help="device class (vbd, tap2, vif...)")
    p.add_argument("-step", dest="step", type=int, required=True, help="migrate step 0-3")
    p.add_argument("-host", dest="host", required=True, help="destination host (or save file)")
    p.add_argument("-domname", dest="domname", required=True, help="domain name")
    p.add_argument("-recover", dest="recover", action="store_true",
                   help="the migration failed after this step")
    p.set_defaults(func=_hook)

    c = subparsers.add_parser(
        "hook-config", help="show, install or remove the migrate hook in xend-config.sxp",
        description="Reads xend-config.sxp (default $XEND_CONFIG or /etc/xen/xend-config.sxp) "
                    "and installs or removes xen-remus as its external-migration-tool, "
                    "keeping the file's comments and layout.")
    c.add_argument("action", choices=("show", "install", "uninstall"))
    c.add_argument("--config", metavar="FILE", help="the xend config file")
    c.add_argument("--tool", metavar="COMMAND",
                   help="the command to install (default: '<path of xen-remus> hook')")
    c.add_argument("--force", action="store_true",
                   help="replace an external-migration-tool that is not ours")
    c.add_argument("--json", action="store_true", help="show: machine-readable output")
    c.set_defaults(func=_hook_config)

    m = subparsers.add_parser(
        "xm-modules", help="install or remove xen/xm/remus-*.py (xm's IMPORTED_COMMANDS route)")
    m.add_argument("action", choices=("install", "remove"))
    m.add_argument("--dir", metavar="DIR", help="xm's module directory (default: that of xen.xm)")
    m.set_defaults(func=_xm_modules)

    x = subparsers.add_parser(
        "xend-relay", help="join stdin/stdout to this host's xend XML-RPC socket (run by a peer over ssh)",
        description="How a peer reaches this host's xend: 'ssh HOST xen-remus xend-relay' carries "
                    "XML-RPC to xend's Unix socket, so xend's unauthenticated TCP server stays off.")
    x.add_argument("--socket", metavar="PATH", help="xend's socket (default /var/run/xend/xmlrpc.sock)")
    x.set_defaults(func=_xend_relay)


def _xend_relay(args):
    from xen_remus_ext.toolstack.xend import relay
    return relay(args.socket)


def _hook(args):
    from xen_remus_ext.xend import hook as migrate
    from xen_remus_ext.xend import hook_tool as tool
    call = migrate.HookCall(args.devclass, args.step, args.host, args.domname, args.recover)
    return tool.run(call)


def _hook_config(args):
    from xen_remus_ext.xend import xend_config as xc
    path = xc.config_path(args.config)
    if args.action == "show":
        settings = xc.read_existing_config(path)
        if args.json:
            print(json.dumps(settings.to_dict(), sort_keys=True, indent=2))
            return 0
        print("config:                  %s" % settings.path)
        print("relocation server:       %s" % ("yes" if settings.relocation_server else "no"))
        print("relocation address:      %s" % (settings.relocation_address or "(all)"))
        print("relocation port:         %d (ssl %d)" % (settings.relocation_port,
                                                        settings.relocation_ssl_port))
        print("relocation hosts-allow:  %s" % (" ".join(settings.hosts_allow) or "(anyone)"))
        print("external-migration-tool: %s%s" % (
            settings.migration_tool or "(none)",
            "  [xen-remus hook]" if settings.hook_installed else ""))
        return 0
    _refuse_foreign_file(path)
    if args.action == "install":
        tool = args.tool or xc.default_tool()
        changed = xc.apply_install_hook(tool, path, force=args.force)
        print("%s: external-migration-tool %s %s" % (
            path, "set to" if changed else "already", repr(tool)))
        if changed:
            sys.stderr.write("xen-remus: restart xend to use it\n")
        return 0
    changed = xc.apply_uninstall_hook(path)
    print("%s: %s" % (path, "hook removed" if changed else "no hook of ours found"))
    return 0


def _refuse_foreign_file(path):
    """install and uninstall write into ``path``: refuse a file that is not
    xend-config.sxp, such as a domain's cfg file or any other text given to
    --config by mistake.  xend-config.sxp holds only ``(name value)`` forms
    and comments; xend would ignore text outside the forms, but a file that
    has some is another file, and the hook's line would break it.

    :raises ToolstackError: naming the file and the first such text
    """
    from xen_remus_ext.config import sxp
    spans = {}
    try:
        with open(path, "rb") as fh:
            text = fh.read().decode("utf-8")
        values = sxp.parse(text, path, spans=spans)
    except (IOError, OSError, UnicodeDecodeError, ConfigError):
        return   # xend_config names what is wrong with the file
    if all(isinstance(v, list) for v in values):
        return
    forms = sorted(spans[id(v)] for v in values if isinstance(v, list))
    pos, line = 0, 1
    while pos < len(text):
        if forms and pos == forms[0][0]:
            line += text.count(u"\n", pos, forms[0][1])
            pos = forms.pop(0)[1]
            continue
        c = text[pos]
        if c == u"#":
            end = text.find(u"\n", pos)
            pos = len(text) if end < 0 else end
            continue
        if not c.isspace():
            break
        line += c == u"\n"
        pos += 1
    # the text itself is not repeated: --config may name a file of secrets
    raise ToolstackError("%s:%d: expected xend's config (only (name value ...) forms and comments), got text "
                         "outside any form: not xend-config.sxp, left unchanged" % (path, line))


def _xm_modules(args):
    from xen_remus_ext.xm import imported
    xm_dir = args.dir or imported.default_xm_dir()
    if not xm_dir:
        raise ToolstackError("xen.xm: expected an installed xm (Xen 4.1-4.4) for %s, got none; "
                             "pass --dir" % (sys.executable,))
    if args.action == "install":
        for path in imported.write_modules(xm_dir):
            print(path)
        sys.stderr.write("xen-remus: add the names to IMPORTED_COMMANDS in xen/xm/main.py "
                         "(patches/alt/xm-imported-commands.patch)\n")
        return 0
    for path in imported.remove_modules(xm_dir):
        print("removed %s" % path)
    return 0
