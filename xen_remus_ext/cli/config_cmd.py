"""``xen-remus config show|check|reverse``: domain configs, Remus-aware.

* ``show [--json|--sxp] [--format F] [--exec] FILE``: the domain as xm
  would see it; ``--json`` prints name, memory (MiB), builder, kernel,
  vcpus, vifs and disks (uname, vdev, mode, remus: null or {host, port,
  driver, path}); ``--sxp`` the ``(vm ...)`` form ``xm create`` sends.
* ``check [--format F] [--xen-version V] FILE``: ``FILE:LINE:
  error|warning: text`` lines (``--xen-version``: the release the domain
  runs on, which decides where ``tap:`` and ``tap2:`` disks go);
  exit 0 without errors (warnings allowed), 1 with errors.  An empty
  config is an error; a config without a remus disk, a warning.
* ``reverse FILE --backup HOST [--port OLD=NEW]... [-o OUT | --in-place]``:
  point the remus disks at HOST with a minimal diff (stdout by default;
  ``--in-place`` keeps ``FILE.orig``).

Exit codes: 0 ok, 1 failure or errors found, 2 usage.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import sys

from xen_remus_ext import config
from xen_remus_ext.config import check as check_mod
from xen_remus_ext.config import disk as disk_mod
from xen_remus_ext.config import reverse as reverse_mod
from xen_remus_ext.config import sxp
from xen_remus_ext.errors import ConfigError, ValidationError


def write(stream, text):
    """Write text to a console stream whatever its encoding (UTF-8 when the
    stream cannot encode it, e.g. Python 2 with a pipe)."""
    try:
        stream.write(text)
    except UnicodeEncodeError:
        data = text.encode("utf-8")
        buf = getattr(stream, "buffer", None)
        if buf is not None:
            stream.flush()
            buf.write(data)
            buf.flush()
        else:
            stream.write(data)


def write_bytes(stream, data):
    buf = getattr(stream, "buffer", None)
    if buf is not None:
        stream.flush()
        buf.write(data)
        buf.flush()
    else:
        try:
            stream.write(data)
        except TypeError:
            stream.write(data.decode("utf-8"))


def _fail(exc):
    msg = exc.format() if isinstance(exc, ConfigError) else u"%s" % (exc.args[0] if exc.args else exc,)
    write(sys.stderr, u"xen-remus: %s\n" % msg)
    return 1


def _or_unset(value, unit=u""):
    return u"(not set)" if value is None else u"%s%s" % (value, unit)


def format_human(cfg):
    """:returns: the readable ``config show`` text of ``cfg``."""
    lines = [
        u"name:    %s" % _or_unset(cfg.name),
        u"builder: %s" % (cfg.builder,),
        u"memory:  %s" % _or_unset(cfg.memory, u" MiB"),
        u"vcpus:   %s" % (cfg.vcpus,),
        u"kernel:  %s" % _or_unset(cfg.kernel),
        u"format:  %s (%s)" % (cfg.format, cfg.source),
    ]
    for v in cfg.vifs:
        lines.append(u"vif:     %s" % (v if v else u"'' (defaults)"))
    for d in cfg.disks:
        lines.append(u"disk:    %s %s %s%s" % (d.vdev, d.mode, d.uname, u" (cdrom)" if d.is_cdrom else u""))
        if d.remus is not None:
            lines.append(u"         remus: backup %s port %s, under it %s:%s"
                         % (d.remus.host, d.remus.port, d.remus.driver, d.remus.path))
    if not cfg.remus_disks:
        lines.append(u"(no remus disk: Remus would replicate memory only)")
    return u"\n".join(lines) + u"\n"


def cmd_show(args):
    try:
        cfg = config.load(args.file, fmt=args.format, allow_exec=args.exec_)
    except ConfigError as exc:
        return _fail(exc)
    if config.is_empty(cfg):
        return _fail(ConfigError(args.file, None, "the config sets nothing (an empty file or comments only): "
                                 "not a domain config"))
    if args.json:
        write(sys.stdout, json.dumps(cfg.to_dict(), indent=2, sort_keys=True, separators=(",", ": ")) + u"\n")
    elif args.sxp:
        write(sys.stdout, sxp.format_domain_sxp(cfg) + u"\n")
    else:
        write(sys.stdout, format_human(cfg))
    return 0


def cmd_check(args):
    diags = check_mod.check_file(args.file, fmt=args.format, xen_version=args.xen_version)
    for d in diags:
        write(sys.stdout, check_mod.format_diagnostic(d) + u"\n")
    n_err = sum(1 for d in diags if d.severity == check_mod.ERROR)
    n_warn = len(diags) - n_err
    write(sys.stdout, u"%s: %d error%s, %d warning%s\n"
          % (args.file, n_err, "" if n_err == 1 else "s", n_warn, "" if n_warn == 1 else "s"))
    return 1 if n_err else 0


def _port_item(text):
    """``--port OLD=NEW``: ports 1-65535, else a usage error (exit 2)."""
    try:
        reverse_mod.parse_port_map([text])
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc).replace("--port: ", "", 1))
    return text


def cmd_reverse(args):
    try:
        ports = reverse_mod.parse_port_map(args.port)
        new = reverse_mod.reverse_file(args.file, args.backup, ports, out=args.output,
                                       in_place=args.in_place, fmt=args.format)
    except (ConfigError, ValidationError) as exc:
        return _fail(exc)
    if args.in_place:
        write(sys.stderr, u"xen-remus: %s rewritten (original kept as %s.orig)\n" % (args.file, args.file))
    elif args.output:
        write(sys.stderr, u"xen-remus: wrote %s\n" % args.output)
    else:
        write_bytes(sys.stdout, new)
    return 0


def _xen_version(text):
    try:
        return disk_mod.parse_xen_version(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def register(subparsers):
    """Add ``config`` and its subcommands to ``subparsers``."""
    p = subparsers.add_parser("config", help="show, check or reverse a domain config (xm, xl, SXP, XML)",
                              description="Domain configs, Remus-aware.")
    sub = p.add_subparsers(dest="config_command", metavar="ACTION")  # parser class: type(p)

    def fmt_arg(sp):
        sp.add_argument("--format", choices=config.FORMATS, default=None,
                        help="the file's format (default: detected)")

    sp = sub.add_parser("show", help="the domain as xm sees it")
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="JSON: name, memory, builder, kernel, vcpus, vifs, disks")
    out.add_argument("--sxp", action="store_true", help="the (vm ...) s-expression xm create sends")
    fmt_arg(sp)
    sp.add_argument("--exec", dest="exec_", action="store_true",
                    help="xm cfg: run the file as Python like xm does (default: safe evaluation)")
    sp.add_argument("file", metavar="FILE")
    sp.set_defaults(func=cmd_show)

    sp = sub.add_parser("check", help="validate the remus disks (exit 1 on errors)")
    fmt_arg(sp)
    sp.add_argument("--xen-version", type=_xen_version, default=None, metavar="VERSION",
                    help="the Xen release the domain runs on (e.g. 4.0, 4.1.6.1, 4.4.4): 'tap:' disks reach "
                         "blktap2 on 4.0 only, blktap1 from 4.1 on (default: warn for every release)")
    sp.add_argument("file", metavar="FILE")
    sp.set_defaults(func=cmd_check)

    sp = sub.add_parser("reverse", help="point the remus disks at another backup, minimal diff")
    sp.add_argument("file", metavar="FILE")
    sp.add_argument("--backup", required=True, metavar="HOST", help="the new backup host (IPv4 preferred)")
    sp.add_argument("--port", action="append", default=[], type=_port_item, metavar="OLD=NEW",
                    help="also change a port")
    where = sp.add_mutually_exclusive_group()
    where.add_argument("-o", "--output", metavar="OUT", help="write the result to OUT")
    where.add_argument("--in-place", action="store_true", help="rewrite FILE, keeping FILE.orig")
    fmt_arg(sp)
    sp.set_defaults(func=cmd_reverse)

    def no_action(args):
        p.print_help(sys.stderr)
        return 2
    p.set_defaults(func=no_action)
