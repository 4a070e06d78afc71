"""``xen-remus replicate serve|relay|backup``: disk replication for ``xl remus``.

On the primary::

    xen-remus replicate serve /var/lib/xen/guest.img --nbd unix:/run/xrl/guest.nbd \\
        --control /run/xrl/guest.ctl &
    nbd-client -unix /run/xrl/guest.nbd /dev/nbd0 -N xvda     # the guest's disk: phy:/dev/nbd0
    xl remus -n -d -F -s 'xen-remus replicate relay --control /run/xrl/guest.ctl \\
        --backup-disk /var/lib/xen/guest.img' guest hostb

xl runs the relay as ``<that command> hostb xl migrate-receive -r [-e]``; the
relay runs ``ssh hostb xen-remus replicate backup --disk PATH -- xl
migrate-receive -r [-e]`` and carries xl's stream and the disk epochs over
that one connection (docs/design/xl-disk-replication.md).
"""
from __future__ import absolute_import, division, print_function

import argparse
import sys

from xen_remus_ext.errors import ReplicationError

#: the backup's silence timeout, seconds (the relay beats every min(0.2, timeout/5) s)
TIMEOUT_MIN, TIMEOUT_MAX = 0.5, 3600.0


def _listen_spec(text):
    """``--nbd``: unix:PATH or tcp:HOST:PORT, checked before anything is created."""
    from xen_remus_ext.replication.service import parse_listen
    try:
        parse_listen(text, "")
    except ReplicationError as exc:
        raise argparse.ArgumentTypeError(str(exc).strip())
    return text


def _timeout(text):
    """``--timeout``: seconds of silence, a number from TIMEOUT_MIN to TIMEOUT_MAX."""
    try:
        value = float(text)
    except ValueError:
        value = None
    if value is None or not TIMEOUT_MIN <= value <= TIMEOUT_MAX:   # also refuses nan
        raise argparse.ArgumentTypeError("expected seconds from %g to %g, got %r"
                                         % (TIMEOUT_MIN, TIMEOUT_MAX, text))
    return value


def _port(text):
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError("expected a port number from 0 to 65535, got %r" % text)
    return int(text)


def _link(text):
    """``--link``: ``ssh``, ``tcp`` or ``tcp:PORT`` -> ("ssh"|"tcp", port)."""
    if text == "ssh":
        return ("ssh", None)
    if text == "tcp":
        return ("tcp", 0)
    if text.startswith("tcp:"):
        return ("tcp", _port(text[4:]))
    raise argparse.ArgumentTypeError("expected ssh, tcp or tcp:PORT, got %r" % text)


def register(subparsers):
    p = subparsers.add_parser(
        "replicate", help="checkpoint-consistent disk replication for xl remus",
        description="Serve a guest disk over NBD with every write captured by checkpoint "
                    "epoch, and relay xl remus's stream with those epochs to the backup, "
                    "which applies epoch N only once checkpoint N is committed.")
    sub = p.add_subparsers(dest="replicate_command", metavar="ACTION")

    s = sub.add_parser("serve", help="serve DISK over NBD; a relay attaches on --control")
    s.add_argument("disk", help="the guest's disk image or block device (primary copy)")
    s.add_argument("--nbd", required=True, metavar="unix:PATH|tcp:HOST:PORT", type=_listen_spec,
                   help="where the NBD server listens (dom0's nbd-client connects there)")
    s.add_argument("--control", required=True, metavar="PATH",
                   help="unix socket for the relay (an existing path is replaced only if it is a "
                        "stale socket of this user's; both sockets are removed at exit)")
    s.add_argument("--name", default="xvda", help="NBD export name (default xvda)")
    s.add_argument("--ready-file", metavar="FILE", help="created once both sockets listen")
    s.add_argument("--device", metavar="DEV",
                   help="the NBD device (/dev/nbdN) the kernel's nbd-client connects to this server: "
                        "recorded so that protect and failback replicate a domain disk on DEV without "
                        "--replicate-disk ('replicate attach' does all of it)")
    s.set_defaults(func=_serve)

    a = sub.add_parser("attach", help="serve IMAGE and connect an NBD device to it; prints the device",
                       description="Start 'xen-remus replicate serve IMAGE' (detached, sockets under "
                                   "/run/xen-remus/replicate, named after IMAGE's path so that both hosts "
                                   "get the same) and connect the kernel's NBD client to it.  The device "
                                   "printed is what the domain's config names (phy:/dev/nbdN); protect and "
                                   "failback then replicate that disk by default.  Idempotent.")
    a.add_argument("image", help="the disk image file or block device (LV)")
    a.add_argument("--device", metavar="DEV",
                   help="the NBD device to use (default: the first free one); give the same on both hosts: "
                        "the domain's config travels with it")
    a.add_argument("--name", default="xvda", help="NBD export name (default xvda)")
    a.add_argument("--json", action="store_true", help="print the server's record as JSON")
    a.set_defaults(func=_attach)

    d = sub.add_parser("detach", help="disconnect an attached image's NBD device and stop its server",
                       description="Refused while a domain's disk is the device.  Nothing to do (exit 0) "
                                   "when the image is not attached.")
    d.add_argument("target", metavar="IMAGE|DEV", help="the image attached, or its NBD device")
    d.set_defaults(func=_detach)

    ls = sub.add_parser("list", help="the disks replicate serve serves on this host")
    ls.add_argument("--json", action="store_true", help="one JSON object")
    ls.set_defaults(func=_list)

    r = sub.add_parser("relay", help="run by xl remus -s in place of ssh")
    r.add_argument("--control", required=True, metavar="PATH", help="the disk server's control socket")
    r.add_argument("--backup-disk", metavar="PATH",
                   help="the disk's copy on the backup (default: the path the disk server serves here: "
                        "both hosts keep their copies at the same path)")
    r.add_argument("--baseline", choices=("full", "none"), default="full",
                   help="full: epoch 0 carries the whole disk (default); none: the backup's copy "
                        "is identical and the guest is paused until --attached-file appears")
    r.add_argument("--ssh", default="ssh", metavar="CMD", help="command to reach HOST (default ssh)")
    r.add_argument("--link", type=_link, default="ssh", metavar="ssh|tcp[:PORT]",
                   help="ssh (default): the link runs through the --ssh command's stdin and stdout; "
                        "tcp: that command only starts the backup's end, which listens on a TCP port "
                        "(PORT, default any) of the address ssh reached it at and admits one connection "
                        "presenting a one-time token; the kernel then gives up on the link only after "
                        "--timeout seconds (TCP_USER_TIMEOUT), so a stall of either host shorter than "
                        "that ends nothing, and a broken ssh connection ends nothing either")
    r.add_argument("--remote", default="xen-remus", metavar="CMD",
                   help="xen-remus on the backup (default xen-remus)")
    r.add_argument("--timeout", type=_timeout, default=3.0,
                   help="seconds of silence after which the backup fails over, %g to %g (default 3)"
                        % (TIMEOUT_MIN, TIMEOUT_MAX))
    r.add_argument("--attached-file", metavar="FILE", help="created once every write is captured")
    r.add_argument("--report", metavar="FILE", help="write the relay's statistics (JSON) here at the end")
    r.add_argument("--backup-report", metavar="FILE", help="the backup writes its failover report here")
    r.add_argument("--backup-snapshot", metavar="FILE",
                   help="the backup copies its disk here at failover, before the guest resumes")
    r.add_argument("--hold-domain", metavar="DOMAIN",
                   help="at failover the backup keeps DOMAIN's copy paused at its last committed "
                        "checkpoint (disk included) until `xen-remus hold release DOMAIN` there: "
                        "its receiver runs behind `xen-remus hold receive`")
    r.add_argument("host", help="the backup host (xl passes it)")
    r.add_argument("receiver", nargs=argparse.REMAINDER,
                   help="the receiver command xl passes (xl migrate-receive -r ...)")
    r.set_defaults(func=_relay)

    b = sub.add_parser("backup", help="the backup's end of the relay (run over ssh)")
    b.add_argument("--disk", required=True, metavar="PATH", help="the backup's copy of the disk")
    b.add_argument("--spool", metavar="PATH",
                   help="spool file of uncommitted epochs (default DISK.spool beside an image file, "
                        "STATE_DIR/replicate/NAME.spool for a block device)")
    b.add_argument("--timeout", type=_timeout, default=3.0,
                   help="seconds of silence that mean failover, %g to %g (default 3)" % (TIMEOUT_MIN, TIMEOUT_MAX))
    b.add_argument("--report", metavar="FILE", help="write the failover report (JSON) here")
    b.add_argument("--snapshot", metavar="FILE",
                   help="at failover, copy the disk here before the guest resumes (for checks)")
    b.add_argument("--listen-tcp", type=_port, metavar="PORT",
                   help="offer the link on this TCP port (0: any) as a HELLO on stdout, and take the "
                        "primary relay's connection (relay --link tcp)")
    b.add_argument("receiver", nargs=argparse.REMAINDER, help="-- xl migrate-receive -r ...")
    b.set_defaults(func=_backup)


def _serve(args):
    import os
    from xen_remus_ext.replication import registry, service
    disk = os.path.abspath(args.disk)
    if args.device and not args.device.startswith("/dev/"):
        raise ReplicationError("serve --device %s: expected a device path under /dev (/dev/nbdN)" % args.device)
    pid = os.getpid()
    registered = []

    def ready():
        try:
            registry.register(disk, args.nbd, args.control, args.name, pid, device=args.device)
        except ReplicationError as exc:
            sys.stderr.write("xen-remus replicate serve: WARNING: %s; protect and failback will not find "
                             "this disk by themselves (give them --replicate-disk)\n" % exc)
            return
        registered.append(1)
    try:
        return service.serve(disk, args.nbd, args.control, name=args.name, ready_file=args.ready_file,
                             on_ready=ready)
    finally:
        if registered:
            registry.unregister(disk, pid)


def _words(text, option):
    """``--remote``: shell words (quotes allowed), as ``-s`` is split."""
    import shlex
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ReplicationError("%s %r: expected shell words, got %s" % (option, text, exc))
    if not words:
        raise ReplicationError("%s: expected a command, got an empty one" % option)
    return words


def backup_argv(args, backup_disk):
    """The argv that runs the backup's end: ``SSH... -- HOST 'xen-remus
    replicate backup ...'`` (``--ssh`` split like a shell would, a host
    that could pass for an ssh option refused, the remote words quoted for
    the remote shell), or the words alone when ``--ssh`` is empty."""
    remote = _words(args.remote, "--remote")
    words = remote + ["replicate", "backup", "--disk", backup_disk, "--timeout", str(args.timeout)]
    if args.backup_report:
        words += ["--report", args.backup_report]
    if args.backup_snapshot:
        words += ["--snapshot", args.backup_snapshot]
    link, port = args.link
    if link == "tcp":
        words += ["--listen-tcp", str(port)]
    receiver = list(args.receiver)
    if args.hold_domain:
        receiver = remote + ["hold", "receive", "--domain", args.hold_domain, "--"] + receiver
    words += ["--"] + receiver
    if not args.ssh:
        return words            # the backup on this host (tests, or HOST reached otherwise)
    from xen_remus_ext.resync.transport import ssh_prefix
    return ssh_prefix(args.ssh, args.host) + [" ".join(_quote(a) for a in words)]


def _attach(args):
    import json
    import logging
    from xen_remus_ext.replication import attach
    rec, changed = attach.attach(args.image, device=args.device, name=args.name)
    logging.getLogger("xen_remus_ext.cli").info("replicate attach %s: %s on %s (server pid %d, control %s)",
                                                rec["image"], "attached" if changed else "already attached",
                                                rec["device"], rec["pid"], rec["control"])
    if args.json:
        print(json.dumps(dict(rec, changed=changed), sort_keys=True))
    else:
        print("%s %s %s" % (rec["image"], "attached on" if changed else "already attached on", rec["device"]))
        print("control socket: %s (server pid %d)" % (rec["control"], rec["pid"]))
        print("in the domain's config: disk = ['phy:%s,%s,w']" % (rec["device"], rec["name"]))
    return 0


def _detach(args):
    import logging
    from xen_remus_ext.replication import attach
    rec = attach.detach(args.target)
    if rec is None:
        print("%s: not attached; nothing to do" % args.target)
        return 0
    logging.getLogger("xen_remus_ext.cli").info("replicate detach %s: %s disconnected, server pid %d stopped",
                                                rec["image"], rec["device"] or "no device", rec["pid"])
    print("%s detached%s; its server (pid %d) stopped" % (
        rec["image"], " from %s" % rec["device"] if rec["device"] else "", rec["pid"]))
    return 0


def _list(args):
    import json
    from xen_remus_ext.replication import registry
    rows = [dict(r, running=registry.alive(r["pid"])) for r in registry.entries()]
    if args.json:
        print(json.dumps({"served": rows}, sort_keys=True))
        return 0
    print("%-40s %-11s %7s %-8s %s" % ("Image", "Device", "PID", "State", "Control"))
    for r in rows:
        print("%-40s %-11s %7d %-8s %s" % (r["image"], r["device"] or "-", r["pid"],
                                            "serving" if r["running"] else "gone", r["control"]))
    return 0


def _relay(args):
    from xen_remus_ext.replication import service
    if not args.receiver:
        raise ReplicationError("relay: no receiver command after HOST (xl passes 'xl migrate-receive -r')")
    backup_disk = args.backup_disk or service.query_server(args.control)["path"]
    link, _port = args.link
    argv = backup_argv(args, backup_disk)
    return service.relay(argv, args.control, baseline=args.baseline, timeout=args.timeout,
                         attached_file=args.attached_file, report=args.report, link=link, host=args.host)


def _quote(arg):
    if arg and all(c.isalnum() or c in "-_./:=,@" for c in arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def _backup(args):
    from xen_remus_ext.replication import service
    receiver = list(args.receiver)
    if receiver and receiver[0] == "--":
        receiver = receiver[1:]
    if not receiver:
        raise ReplicationError("backup: no receiver command (-- xl migrate-receive -r ...)")
    return service.backup(receiver, args.disk, spool=args.spool, timeout=args.timeout,
                          report=args.report, snapshot=args.snapshot, listen_tcp=args.listen_tcp)
