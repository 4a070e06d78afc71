"""``xen-remus resync``, ``xen-remus receive`` and ``xen-remus verify``.

resync SRC DEST   bring DEST (path, HOST:PATH, [IPV6]:PATH, tcp://HOST:PORT/EXPORT) up to date from SRC
receive           the receiving end: ``--stdio PATH`` (started through ssh) or
                  ``--listen ADDR:PORT --key KEYFILE --export NAME=PATH ...``
verify SRC DEST   compare both copies by keyed digests; exit 0 identical, 1 differ, 2 error (as cmp)

Exit codes of resync and receive: 0 done, 1 failed, 2 usage (an option
value that cannot be used, e.g. ``--rate 1``, ``-s "'x"``, a port over 65535).

``--json`` prints one JSON object a line on stdout; the last is the result
(``{"result": "ok", "mode": ..., "bytes_read": ..., "bytes_sent": ...,
"extents": ..., "seconds": ..., "resumed": ..., "resent": ...}`` or ``{"result": "error", "error": ...}``).
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import os
import sys

from xen_remus_ext.compat import to_text
from xen_remus_ext.errors import ConfigError, ResyncError, ValidationError, XenRemusError

#: the lowest --rate besides 0 (protocol.MIN_RATE; kept here so that --help needs no import)
MIN_RATE = 256 * 1024


def size_arg(text):
    """An argparse type: ``64K``, ``1.5M``, ``0x1000`` -> bytes (``resync --rate``, ``meta create --size``)."""
    from xen_remus_ext.resync.plan import parse_size
    try:
        return parse_size(text)
    except ValidationError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _rate(text):
    """``--rate``: bytes/s with K/M/G suffix, fractions allowed; 0 means no cap."""
    value = size_arg(text)
    if value and value < MIN_RATE:
        raise argparse.ArgumentTypeError("rate: expected 0 (no cap) or at least %dK bytes/s, got %r"
                                         % (MIN_RATE >> 10, text))
    return value or None


def _block_size(text):
    from xen_remus_ext.errors import ProtocolError
    from xen_remus_ext.resync.protocol import check_block_size
    value = size_arg(text)
    try:
        check_block_size(value)
    except ProtocolError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return value


def _ssh(text):
    from xen_remus_ext.resync.transport import split_ssh
    try:
        split_ssh(text)
    except ResyncError as exc:
        raise argparse.ArgumentTypeError(str(exc))
    return text


def _listen(text):
    from xen_remus_ext.resync.transport import parse_listen
    try:
        return parse_listen(text)
    except ResyncError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1
    if not 1 <= value <= 86400:
        raise argparse.ArgumentTypeError("expected seconds from 1 to 86400, got %r" % (text,))
    return value


def _usage(args, message):
    """An option combination that cannot be used: argparse's format, exit 2."""
    sys.stderr.write("xen-remus %s: error: %s\n" % (args.command, message))
    return 2


def _common(p, rate=True):
    p.add_argument("-s", "--ssh", default="ssh", type=_ssh, metavar="SSHCMD",
                   help="command used to reach HOST for HOST:PATH (default: ssh), as xl migrate -s")
    p.add_argument("--key", metavar="KEYFILE", help="shared key file (owner-only) for tcp:// destinations")
    p.add_argument("--plaintext", action="store_true",
                   help="tcp:// without TLS (disk contents cross in clear text; the receiver must allow it)")
    p.add_argument("--block-size", type=_block_size, default=65536, metavar="SIZE",
                   help="digest block size, a power of two from 4K to 1M (default 64K)")
    p.add_argument("--strong", action="store_true", help="use HMAC-SHA256 digests instead of keyed xxh3-128")
    if rate:
        p.add_argument("--rate", type=_rate, default=None, metavar="RATE",
                       help="cap the disk reads at RATE bytes/s (e.g. 50M or 1.5M; at least %dK; "
                            "0, the default, means no cap)" % (MIN_RATE >> 10))
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
    p.add_argument("--discard-target", "--discard-peer", dest="discard_target", action="store_true",
                   help="overwrite a target holding writes the source never saw (split brain: DEST loses); "
                        "--discard-peer is an alias")
    p.add_argument("--resume", dest="resume", action="store_true", default=True,
                   help="continue an interrupted run from the receiver's journal (default): its finished "
                        "ranges are compared by digests, only what differs is sent again")
    p.add_argument("--no-resume", dest="resume", action="store_false", help="ignore the receiver's journal")
    p.add_argument("--compress", choices=("auto", "zstd", "none"), default="auto",
                   help="zstd-compress the data sent; auto: on over ssh and TCP, off for a local target")
    _common(p)
    p.set_defaults(func=cmd_resync)

    p = subparsers.add_parser("receive", help="receiving end of a resync (ssh stdio or TCP listener)",
                              description="Serve resyncs into local disks.")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--stdio", metavar="PATH", help="one session on stdin/stdout into PATH (started by ssh)")
    g.add_argument("--listen", metavar="ADDR:PORT", type=_listen,
                   help="accept authenticated TCP senders over TLS ([ADDR]:PORT for IPv6; port 0 picks one)")
    g.add_argument("--gen-cert", action="store_true",
                   help="write a new self-signed TLS certificate (--cert, or the default) and print its SHA-256")
    p.add_argument("--key", metavar="KEYFILE", help="shared key file (owner-only), required with --listen")
    p.add_argument("--cert", metavar="PEMFILE",
                   help="TLS certificate and key of --listen (default STATE_DIR/tls/receiver.pem, made if missing)")
    p.add_argument("--plaintext", action="store_true",
                   help="with --listen: also accept senders without TLS (disk contents in clear text)")
    p.add_argument("--export", action="append", default=[], metavar="NAME=PATH",
                   help="a disk senders may write, by name (repeatable, each NAME once)")
    p.add_argument("--idle-timeout", type=_seconds, default=120, metavar="SECONDS",
                   help="with --listen: drop an authenticated session in which nothing moved for SECONDS "
                        "(default 120); its target stays inconsistent and is released")
    p.set_defaults(func=cmd_receive)

    p = subparsers.add_parser("verify", help="compare two disk copies block by block",
                              description="Compare SRC and DEST by keyed digests; exit 0 when identical, "
                                          "1 when they differ, 2 on an error (as cmp).")
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


def _teller(dest):
    """Events for a human: a resumed run says so on stderr (a warning is logged there already)."""
    def tell(obj):
        if obj.get("event") == "resume":
            sys.stderr.write("xen-remus: %s: resuming an interrupted run: comparing the %d bytes it finished "
                             "by digests, %d to go\n" % (dest, obj["reverify"], obj["remaining"]))
            sys.stderr.flush()
    return tell


def _run(args, fn):
    events = _printer(args.json)
    try:
        return fn(events)
    except XenRemusError as exc:
        if events is not None:
            events({"result": "error", "error": str(exc), "kind": type(exc).__name__})
        raise


def _options(args, **fields):
    from xen_remus_ext.resync.api import ResyncOptions
    return ResyncOptions(rate=args.rate, ssh=args.ssh, key_file=args.key, block_size=args.block_size,
                         strong=args.strong, progress=not args.no_progress and not args.json,
                         plaintext=args.plaintext, **fields)


def cmd_resync(args):
    from xen_remus_ext.resync import api, plan
    from xen_remus_ext.resync.blockio import disk_size

    mode = args.mode
    if args.dirty and mode not in ("auto", "tracked"):
        return _usage(args, "--dirty: only tracked mode sends a dirty list; --mode %s would ignore it" % mode)
    if mode == "tracked" and not args.dirty:
        return _usage(args, "--mode tracked: expected --dirty FILE, got none")

    def go(events):
        extents = None
        if args.dirty:
            try:
                with open(args.dirty, "rb") as f:
                    text = to_text(f.read())
            except (IOError, OSError) as exc:
                raise ConfigError(args.dirty, 0, "cannot read: %s" % (getattr(exc, "strerror", None) or exc))
            extents = plan.parse_dirty(text, disk_size(args.src), args.dirty)
        opts = _options(args, mode="tracked" if args.dirty else mode, verify=args.verify,
                        discard_target=args.discard_target, resume=args.resume, compress=args.compress)
        res = api.resync(args.src, args.dest, opts, extents=extents,
                         events=events if events is not None or getattr(args, "quiet", False) else _teller(args.dest))
        if events is None and not getattr(args, "quiet", False):
            sys.stderr.write("xen-remus: %s -> %s: %s mode, %d extent(s), %d bytes read, %d bytes sent, %.2f s%s%s\n"
                             % (args.src, args.dest, res.mode, res.extents, res.bytes_read, res.bytes_sent,
                                res.seconds, ", verified" if res.verified else "",
                                ", resumed (%d finished bytes compared again, %d of them sent again)"
                                % (res.resumed, res.resent) if res.resumed else ""))
        return 0
    return _run(args, go)


def cmd_verify(args):
    from xen_remus_ext.resync import api

    def go(events):
        res = api.verify(args.src, args.dest, _options(args), events=events)
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
    try:
        return _run(args, go)
    except XenRemusError as exc:       # 1 means "differ": an error is 2, as cmp
        sys.stderr.write("xen-remus: %s\n" % (exc,))
        return 2


def parse_exports(items):
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path or "/" in name:
            raise ValidationError("--export: expected NAME=PATH (NAME without '/'), got %r" % (item,))
        if name in out:   # which copy a sender writes must not depend on the order of options
            raise ValidationError("--export %s: expected each NAME once, got it for %s and for %s"
                                  % (name, out[name], path))
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
    from xen_remus_ext.resync import tls
    if args.gen_cert:
        path = args.cert or tls.default_cert_path()
        fp = tls.gen_cert(path)
        sys.stdout.write("%s\nSHA-256 %s\n" % (path, tls.pretty(fp)))
        return 0
    if not args.key:
        raise ResyncError("receive --listen: expected --key KEYFILE, got none")
    exports = parse_exports(args.export)
    check_exports(exports)
    server = transport.ResyncServer(args.listen, args.key, exports, cert=args.cert, plaintext=args.plaintext,
                                    idle_seconds=args.idle_timeout)
    if not getattr(args, "quiet", False):
        sys.stderr.write("xen-remus: receiving on %s:%d (exports: %s; TLS certificate SHA-256 %s; plaintext %s)\n"
                         % (server.address[0], server.address[1], ", ".join(sorted(server.exports)),
                            tls.pretty(server.tls.fingerprint), "allowed" if args.plaintext else "refused"))
        sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
