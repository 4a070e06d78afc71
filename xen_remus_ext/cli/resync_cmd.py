"""``xen-remus resync``, ``xen-remus receive`` and ``xen-remus verify``.

resync SRC DEST   bring DEST (path, HOST:PATH, tcp://HOST:PORT/EXPORT) up to date from SRC
receive           the receiving end: ``--stdio PATH`` (started through ssh) or
                  ``--listen ADDR:PORT --key KEYFILE --export NAME=PATH ...``
verify SRC DEST   compare both copies by keyed digests; exit 0 identical, 1 differ

``--json`` prints one JSON object a line on stdout; the last is the result
(``{"result": "ok", "mode": ..., "bytes_read": ..., "bytes_sent": ...,
"extents": ..., "seconds": ...}`` or ``{"result": "error", "error": ...}``).
"""
from __future__ import absolute_import, division, print_function

import json
import os
import sys

from xen_remus_ext.compat import to_text
from xen_remus_ext.errors import ConfigError, ResyncError, ValidationError, XenRemusError


def _size(text):
    from xen_remus_ext.resync.plan import parse_size
    try:
        return parse_size(text)
    except ValidationError as exc:
        raise _argtype_error(str(exc))


def _argtype_error(msg):
    import argparse
    return argparse.ArgumentTypeError(msg)


def _common(p, rate=True):
    p.add_argument("-s", "--ssh", default="ssh", metavar="SSHCMD",
                   help="command used to reach HOST for HOST:PATH (default: ssh), as xl migrate -s")
    p.add_argument("--key", metavar="KEYFILE", help="shared key file (owner-only) for tcp:// destinations")
    p.add_argument("--block-size", type=_size, default=65536, metavar="SIZE", help="digest block size (default 64K)")
    p.add_argument("--strong", action="store_true", help="use HMAC-SHA256 digests instead of keyed xxh3-128")
    if rate:
        p.add_argument("--rate", type=_size, default=None, metavar="RATE",
                       help="cap the disk reads at RATE bytes/s (e.g. 50M)")
    p.add_argument("--json", action="store_true", help="one JSON event a line on stdout; the last is the result")
    p.add_argument("--no-progress", action="store_true", help="no progress bar even on a tty")


def register(subparsers):
    """Add ``resync``, ``receive`` and ``verify`` to ``subparsers``."""
    p = subparsers.add_parser("resync", help="bring a stale disk copy up to date (tracked, checksum or full)",
                              description="Bring DEST up to date from SRC, the authoritative copy.")
    p.add_argument("src", metavar="SRC", help="authoritative image file or block device")
    p.add_argument("dest", metavar="DEST", help="stale copy: PATH, HOST:PATH or tcp://HOST:PORT/EXPORT")
    p.add_argument("--mode", choices=("auto", "tracked", "checksum", "full"), default="auto",
                   help="tracked: send the --dirty extents; checksum: send blocks whose keyed digests differ; "
                        "full: send everything (zeros as holes); auto (default): tracked with --dirty, "
                        "else checksum")
    p.add_argument("--dirty", metavar="FILE",
                   help="dirty extents for tracked mode: 'OFFSET LENGTH' per line (see docs/protocol.md)")
    p.add_argument("--verify", action="store_true", help="compare every block after the sync")
    p.add_argument("--discard-target", action="store_true",
                   help="overwrite a target holding writes the source never saw (split brain: DEST loses)")
    p.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue an interrupted run from the receiver's journal (default)")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore the receiver's journal")
    _common(p)
    p.set_defaults(func=cmd_resync)

    p = subparsers.add_parser("receive", help="receiving end of a resync (ssh stdio or TCP listener)",
                              description="Serve resyncs into local disks.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stdio", metavar="PATH", help="one session on stdin/stdout into PATH (started by ssh)")
    g.add_argument("--listen", metavar="ADDR:PORT", help="accept authenticated TCP senders")
    p.add_argument("--key", metavar="KEYFILE", help="shared key file (owner-only), required with --listen")
    p.add_argument("--export", action="append", default=[], metavar="NAME=PATH",
                   help="a disk senders may write, by name (repeatable)")
    p.set_defaults(func=cmd_receive)

    p = subparsers.add_parser("verify", help="compare two disk copies block by block",
                              description="Compare SRC and DEST by keyed digests; exit 0 when identical.")
    p.add_argument("src", metavar="SRC")
    p.add_argument("dest", metavar="DEST")
    _common(p)
    p.set_defaults(func=cmd_verify)


def _printer(enabled):
    if not enabled:
        return None

    def emit(obj):
        sys.stdout.write(json.dumps(obj, sort_keys=True) + "\n")
        sys.stdout.flush()
    return emit


def _run(args, fn):
    events = _printer(args.json)
    try:
        return fn(events)
    except XenRemusError as exc:
        if events is not None:
            events({"result": "error", "error": str(exc), "kind": type(exc).__name__})
        raise


def cmd_resync(args):
    from xen_remus_ext.resync import api, plan
    from xen_remus_ext.resync.blockio import disk_size

    def go(events):
        extents = None
        mode = args.mode
        if args.dirty:
            try:
                with open(args.dirty, "rb") as f:
                    text = to_text(f.read())
            except (IOError, OSError) as exc:
                raise ConfigError(args.dirty, 0, "cannot read: %s" % (getattr(exc, "strerror", None) or exc))
            extents = plan.parse_dirty(text, disk_size(args.src), args.dirty)
            if mode == "auto":
                mode = "tracked"
        elif args.mode == "tracked":
            raise ResyncError("tracked mode from the command line needs --dirty FILE")
        res = api.resync(args.src, args.dest, mode=mode, extents=extents, rate=args.rate, verify=args.verify,
                         discard_target=args.discard_target, ssh=args.ssh, key_file=args.key, events=events,
                         block_size=args.block_size, progress=not args.no_progress and not args.json,
                         resume=args.resume, strong=args.strong)
        if events is None and not getattr(args, "quiet", False):
            sys.stderr.write("xen-remus: %s -> %s: %s mode, %d extent(s), %d bytes read, %d bytes sent, %.2f s%s\n"
                             % (args.src, args.dest, res.mode, res.extents, res.bytes_read, res.bytes_sent,
                                res.seconds, ", verified" if res.verified else ""))
        return 0
    return _run(args, go)


def cmd_verify(args):
    from xen_remus_ext.resync import api

    def go(events):
        res = api.verify(args.src, args.dest, rate=args.rate, ssh=args.ssh, key_file=args.key, events=events,
                         block_size=args.block_size, strong=args.strong,
                         progress=not args.no_progress and not args.json)
        if events is None and not getattr(args, "quiet", False):
            if res.identical:
                sys.stderr.write("xen-remus: %s and %s are identical (%d bytes read, %.2f s)\n"
                                 % (args.src, args.dest, res.bytes_read, res.seconds))
            else:
                first = res.differing[0]
                sys.stderr.write("xen-remus: %s and %s differ in %d extent(s), %d bytes; first at %d+%d\n"
                                 % (args.src, args.dest, len(res.differing),
                                    sum(e.length for e in res.differing), first.offset, first.length))
        return 0 if res.identical else 1
    return _run(args, go)


def parse_exports(items):
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "/" in name:
            raise ValidationError("--export: expected NAME=PATH (NAME without '/'), got %r" % (item,))
        out[name] = path
    return out


def check_exports(exports):
    """Every export names an existing image file or block device.

    :raises ResyncError: naming the first that does not.
    """
    import stat
    for name in sorted(exports):
        path = exports[name]
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            raise ResyncError("--export %s=%s: expected an existing image file or block device, got: %s"
                              % (name, path, getattr(exc, "strerror", None) or exc))
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            raise ResyncError("--export %s=%s: expected an image file or block device, got another kind of file"
                              % (name, path))


def cmd_receive(args):
    from xen_remus_ext.resync import protocol, transport
    from xen_remus_ext.resync.receiver import Receiver
    if args.stdio:
        # the protocol owns fd 1 from here on; anything printed goes to stderr
        wfd = os.dup(1)
        os.dup2(2, 1)
        chan = protocol.StreamChannel(rfd=0, wfd=wfd, peer="sender (stdio)")
        try:
            Receiver(chan, {"": args.stdio}).run()
        except XenRemusError:
            return 1     # already logged, and sent to the sender, which reports it
        return 0
    if not args.key:
        raise ResyncError("receive --listen: expected --key KEYFILE, got none")
    exports = parse_exports(args.export)
    check_exports(exports)
    server = transport.ResyncServer(args.listen, args.key, exports)
    sys.stderr.write("xen-remus: receiving on %s:%d (exports: %s)\n"
                     % (server.address[0], server.address[1], ", ".join(sorted(server.exports))))
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
