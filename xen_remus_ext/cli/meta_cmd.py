"""``xen-remus meta show|invalidate|forget|create DISK``: a disk copy's
generation record (resync/meta.py), in DRBD's vocabulary.

show DISK         the copy's identity, generations (current, bitmap,
                  history), consistent, role, and the record's file
invalidate DISK   this copy is the one to be overwritten: the next resync
                  into it compares every block and needs no --discard-target;
                  it is refused as a resync source until then
forget DISK       delete the record: the copy counts as new (see the man page)
create DISK       create DISK as an empty sparse image of --size bytes when it
                  does not exist (how ``protect`` seeds a backup copy); an
                  existing DISK is refused

``--json`` prints one JSON object on stdout.  Exit 0 ok, 1 refused or failed.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import stat

from xen_remus_ext.cli.resync_cmd import size_arg
from xen_remus_ext.errors import ValidationError


def _action(sub, name, func, help, description, json_help="print one JSON object"):
    """One ``meta ACTION DISK [--json]`` subcommand; :returns: its parser."""
    s = sub.add_parser(name, help=help, description=description)
    s.add_argument("disk", metavar="DISK")
    s.add_argument("--json", action="store_true", help=json_help)
    s.set_defaults(func=func)
    return s


def register(subparsers):
    p = subparsers.add_parser(
        "meta", help="show, invalidate or forget a disk copy's generation record",
        description="A disk copy's generation record (what resync and failback compare to refuse "
                    "split brain).  The vocabulary is DRBD's; see xen-remus(1), \"Disk metadata\".")
    sub = p.add_subparsers(dest="meta_command", metavar="ACTION")
    _action(sub, "show", cmd_show, "generations, consistent, role and history of DISK",
            "Print DISK's generation record.")
    _action(sub, "invalidate", cmd_invalidate, "mark DISK as the copy to be overwritten by the next resync",
            "Mark DISK inconsistent under a new generation: the next resync into it is allowed without "
            "--discard-target and compares every block; DISK is refused as a resync source until then.",
            "print the new record as one JSON object")
    _action(sub, "forget", cmd_forget, "delete DISK's generation record",
            "Delete DISK's record.  A resync into DISK then checks no generation and compares every "
            "block; a resync from DISK gives it a fresh generation no peer shares, so the peer must be "
            "named the loser with --discard-target.", "print the deleted record as one JSON object")
    s = _action(sub, "create", cmd_create, "create DISK as an empty sparse image (refuses an existing one)",
                "Create DISK as a sparse image of SIZE bytes, holding only holes.  An existing DISK is "
                "refused, whatever it holds.")
    s.add_argument("--size", type=size_arg, required=True, metavar="SIZE", help="bytes (K, M, G suffixes)")
    p.set_defaults(func=lambda args: _usage(p))


def _usage(p):
    p.print_usage()
    return 2


def _check_disk(disk, must_exist=False):
    """DISK is an image file or a block device (or, unless ``must_exist``, absent).

    :raises ValidationError: naming DISK and what it is instead
    """
    try:
        mode = os.stat(disk).st_mode
    except OSError as exc:
        if must_exist or getattr(exc, "errno", None) != 2:
            raise ValidationError("%s: expected an existing image file or block device, got: %s"
                                  % (disk, getattr(exc, "strerror", None) or exc))
        return
    if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
        raise ValidationError("%s: expected an image file or a block device, got %s"
                              % (disk, "a directory" if stat.S_ISDIR(mode) else "another file type"))


def describe(disk):
    """:returns: dict ``disk, identity, record, exists, size, meta``."""
    from xen_remus_ext.resync import meta
    exists = os.path.exists(disk)
    size = None
    if exists:
        try:
            fd = os.open(disk, os.O_RDONLY)
            try:
                size = os.lseek(fd, 0, os.SEEK_END)
            finally:
                os.close(fd)
        except OSError:
            size = None
    m = meta.load(disk)
    return {"disk": disk, "identity": meta.identity(disk), "record": meta.meta_path(disk), "exists": exists,
            "size": size, "meta": m.to_dict() if m is not None else None}


def _print(args, obj, text):
    if args.json:
        print(json.dumps(dict(obj, result="ok"), sort_keys=True))
    elif not args.quiet:
        print(text)


def format_record(d):
    m = d["meta"]
    lines = ["disk:       %s" % d["disk"]]
    if d["identity"] != d["disk"]:
        lines.append("identity:   %s" % d["identity"])
    lines.append("size:       %s" % ("%d bytes" % d["size"] if d["size"] is not None
                                     else "(absent)" if not d["exists"] else "(unreadable)"))
    if m is None:
        lines.append("record:     none (%s); a resync into this copy counts it as new" % d["record"])
        return "\n".join(lines)
    lines += ["record:     %s" % d["record"],
              "current:    %s" % m["current"],
              "bitmap:     %s" % (m["bitmap"] or "-  (in sync with its peer when last replicated)"),
              "history:    %s" % (" ".join(m["history"]) or "-"),
              "consistent: %s" % ("yes" if m["consistent"] else
                                  "NO (an interrupted or invalidated resync target; refused as a source)"),
              "role:       %s" % (m["role"] or "-")]
    return "\n".join(lines)


def cmd_show(args):
    _check_disk(args.disk)
    d = describe(args.disk)
    _print(args, d, format_record(d))
    return 0


def cmd_invalidate(args):
    import logging
    from xen_remus_ext.resync import meta
    _check_disk(args.disk, must_exist=True)
    m = meta.invalidate(args.disk)
    logging.getLogger(__name__).info("meta invalidate %s: now generation %s, inconsistent", args.disk, m.current)
    d = describe(args.disk)
    _print(args, d, "%s: invalidated; the next resync into it compares every block\n%s"
           % (args.disk, format_record(d)))
    return 0


def cmd_forget(args):
    import logging
    from xen_remus_ext.resync import meta
    _check_disk(args.disk)
    m = meta.forget(args.disk)
    logging.getLogger(__name__).info("meta forget %s: record %s deleted", args.disk,
                                     m.current if m is not None else "(none)")
    _print(args, {"disk": args.disk, "forgotten": m.to_dict() if m is not None else None},
           "%s: %s" % (args.disk, "record deleted (generation %s)" % m.current if m is not None
                       else "had no record"))
    return 0


def cmd_create(args):
    from xen_remus_ext.resync.disksync import create_sparse
    create_sparse(args.disk, args.size)
    _print(args, {"disk": args.disk, "size": args.size, "created": True},
           "%s: created, %d bytes, sparse" % (args.disk, args.size))
    return 0
