"""``xen-remus failback``, ``xen-remus resync-domain`` and ``xen-remus status``.

protect DOMAIN HOST         seed HOST's copy of every remus disk of DOMAIN
                            (running here) and start Remus toward HOST
failback DOMAIN HOST        bring DOMAIN (running here, unprotected, after a
                            failover) home to HOST and protect it again;
                            ``--reverse-only``: keep it here, protect toward HOST
resync-domain DOMAIN HOST   bring HOST's copy of every remus disk of DOMAIN up
                            to date from here (``xm remus-resync``)
status [DOMAIN]             protection and failback state of the domains here

``--json`` prints one JSON object (the result, or ``{"result": "error",
"error": ..., "state": ..., "step": ...}``) on stdout.  Exit 0 ok, 1 refused
or failed, 2 usage.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import sys

from xen_remus_ext import model, wiring
from xen_remus_ext.errors import FailbackError, XenRemusError

TOOLSTACKS = wiring.TOOLSTACKS


def _rate(text):
    """``--rate`` as resync reads it: a rate under 256K is a usage error (exit 2)."""
    from xen_remus_ext.cli.resync_cmd import _rate as resync_rate
    return resync_rate(text)


def _int_in(low, high, what):
    """An argparse type: an integer from ``low`` to ``high``, else a usage error naming ``what``."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError("%s: expected an integer from %d to %d, got %r" % (what, low, high, text))
        return value
    return parse


_interval = _int_in(1, 3600 * 1000, "interval (ms)")
_port = _int_in(1, 65535, "port")


def _toolstack_opts(p):
    p.add_argument("--toolstack", choices=TOOLSTACKS, default=None,
                   help="toolstack to drive: xend, xl or sim (default: xend if it runs here, else xl if "
                        "present, else xend)")
    p.add_argument("--agent", metavar="ADDR", help="sim: this host's agent (unix:PATH or HOST:PORT)")
    p.add_argument("--peer-agent", metavar="ADDR", help="sim: the peer's agent")
    p.add_argument("--peer-uri", metavar="URI",
                   help="xend: the peer's xend (default ssh://HOST: its Unix socket through --ssh)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")


def _replicate_disk(text):
    """``--replicate-disk VDEV=CONTROL`` -> (vdev, control)."""
    vdev, sep, control = text.partition("=")
    if not sep or not vdev or not control.startswith("/"):
        raise argparse.ArgumentTypeError("expected VDEV=CONTROL (an absolute path of the disk server's "
                                         "control socket), got %r" % (text,))
    return vdev, control


def _replicate_timeout(text):
    from xen_remus_ext.cli.replicate_cmd import _timeout
    return _timeout(text)


def _memory_only_opts(p):
    p.add_argument("--lose-disk-writes-at-failover", dest="accept_disk_loss", action="store_true",
                   help="xl --no-disk: accept that a failover resumes the backup on a disk without the "
                        "writes made since protection began (disks neither shared nor DRBD protocol D)")
    p.add_argument("--shared-disk", action="append", default=[], metavar="VDEV",
                   help="xl --no-disk: VDEV is on storage both hosts share (nothing to lose); repeatable")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--replicate-disk", type=_replicate_disk, metavar="VDEV=CONTROL",
                   help="xl: replicate disk VDEV checkpoint by checkpoint with xen-remus replicate: its "
                        "backend is the NBD device of 'xen-remus replicate serve' whose control socket is "
                        "CONTROL on the host running the domain (the same path on both hosts, as the image "
                        "it serves); Remus runs with -d and xen-remus replicate relay as its transport; "
                        "implies --no-disk for the other disks (one replicated disk per domain)")
    g.add_argument("--no-replicate-disk", dest="find_replicated", action="store_false",
                   help="xl: do not replicate the disk that 'xen-remus replicate serve' serves here (by "
                        "default a domain disk on such a server's NBD device is replicated as with "
                        "--replicate-disk, see 'xen-remus replicate attach'); that disk is then like "
                        "any other (with --no-disk: refused unless --lose-disk-writes-at-failover)")
    p.add_argument("--replicate-timeout", type=_replicate_timeout, default=3.0, metavar="SECONDS",
                   help="the replicated disk's (named or found): seconds of silence after which the backup "
                        "fails over (0.5 to 3600, default 3)")


def _hold_opts(p):
    p.add_argument("--hold-backup", action="store_true",
                   help="xl: when the checkpoint stream breaks, the backup keeps its copy paused at the "
                        "last committed checkpoint instead of resuming it, until `xen-remus hold release "
                        "DOMAIN` there (for a cluster manager that fences first; see xen-remus(1), hold)")


def _journaled_opts(p, what):
    """The options of a journaled operation (``what``: failback, protect)."""
    p.add_argument("-n", "--dry-run", action="store_true", help="print the plan and the preflight, change nothing")
    p.add_argument("--resume", action="store_true", help="continue the journaled %s (an error if none)" % what)
    p.add_argument("--abort", action="store_true", help="stop the journaled %s in a safe state" % what)
    p.add_argument("--rate", type=_rate, default=None, metavar="RATE",
                   help="cap the disk pre-copy at RATE bytes/s (e.g. 50M); the final pass is never capped")
    p.add_argument("--verify", action="store_true", help="verify every disk after the final delta")


def _peer_disk_opts(p, whose):
    """How the peer's disk copies are reached (``whose``: the help's owner)."""
    p.add_argument("-s", "--ssh", default="ssh", metavar="SSHCMD", help="command to reach HOST (default ssh)")
    p.add_argument("--key", metavar="KEYFILE", help="shared key file for tcp:// disk destinations")
    p.add_argument("--dest", metavar="TEMPLATE", default=None,
                   help="where " + whose + " disk copies are, as %%(host)s, %%(path)s, %%(vdev)s "
                        "(default '%%(host)s:%%(path)s', over ssh)")


def register(subparsers):
    """Add ``failback``, ``protect``, ``resync-domain`` and ``status`` to ``subparsers``."""
    p = subparsers.add_parser(
        "failback", help="bring a failed-over domain home with its disk changes and protect it again",
        description="Fail DOMAIN, running here unprotected after a Remus failover, back to HOST: "
                    "preflight, live disk pre-copy, migration with the final disk delta sent while "
                    "the domain is suspended, Remus again from HOST toward here.  Every step is "
                    "journaled; rerun (or --resume) after an interruption.")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("host", metavar="HOST", help="the original primary (where the domain goes home)")
    p.add_argument("--reverse-only", action="store_true",
                   help="do not migrate: resync HOST's copy and protect from here toward HOST")
    _journaled_opts(p, "failback")
    p.add_argument("--discard-target", "--discard-peer", dest="discard_peer", action="store_true",
                   help="split brain: the peer's copy (the resync's target) loses its own writes (name the "
                        "loser explicitly); --discard-peer is an alias")
    p.add_argument("-i", "--interval", type=_interval, default=200, metavar="MS",
                   help="Remus checkpoint interval once protected (default 200)")
    p.add_argument("--no-net", action="store_true", help="Remus without network buffering")
    p.add_argument("--no-disk", action="store_true",
                   help="xl: memory-only Remus (xl remus -d; e.g. DRBD without protocol D): the domain's "
                        "writable disks are the ones failback resyncs")
    p.add_argument("--tracker", choices=("fiemap",), default=None,
                   help="track disk writes by reflink + FIEMAP (image files on XFS/Btrfs), so later "
                        "pre-copy passes and the final delta send only what changed (xend: the default, "
                        "for disks whose tapdisk stack has no log driver, which is used first; checksums "
                        "where the images cannot be cloned; xl: only when asked)")
    p.add_argument("-p", "--port", type=_port, default=None, help="relocation port for the migration")
    p.add_argument("--local-host", metavar="ADDR", help="this host's name or address as the peer reaches it")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="the domain's config file: preflight checks it names the new backup or reverses cleanly")
    _peer_disk_opts(p, "the peer's")
    _memory_only_opts(p)
    _hold_opts(p)
    _toolstack_opts(p)
    p.set_defaults(func=cmd_failback)

    p = subparsers.add_parser(
        "protect", help="seed the backup's disk copies and start Remus toward HOST",
        description="Protect DOMAIN, running here, with Remus toward HOST: preflight, creation of each "
                    "missing backup copy as a sparse image, a live pre-copy of every remus disk, the "
                    "final delta with the domain paused, Remus started, the domain unpaused (one paused "
                    "before stays paused; on xl, where Remus starts only on a running domain, it is "
                    "refused at that step).  Journaled; rerun (or --resume) after an interruption.")
    p.add_argument("domain", metavar="DOMAIN")
    p.add_argument("host", metavar="HOST", help="the backup host")
    _journaled_opts(p, "protect")
    p.add_argument("--discard-target", "--discard-peer", dest="discard_peer", action="store_true",
                   help="overwrite a backup copy (the resync's target) that holds writes of its own or has no "
                        "generation record; --discard-peer is an alias")
    p.add_argument("-i", "--interval", type=_interval, default=200, metavar="MS",
                   help="Remus checkpoint interval (default 200)")
    p.add_argument("--no-net", action="store_true", help="Remus without network buffering")
    p.add_argument("--no-disk", action="store_true",
                   help="xl: memory-only Remus (xl remus -d): the backup's disks do not follow the primary")
    p.add_argument("--tracker", choices=("fiemap",), default=None,
                   help="xl: track disk writes by reflink + FIEMAP during the pre-copy")
    p.add_argument("--local-host", metavar="ADDR", help="this host's name or address as the peer reaches it")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="the domain's config file: preflight checks it names HOST or reverses cleanly")
    _peer_disk_opts(p, "HOST's")
    _memory_only_opts(p)
    _hold_opts(p)
    _toolstack_opts(p)
    p.set_defaults(func=cmd_protect)

    r = subparsers.add_parser("resync-domain", help="resync every remus disk of a domain to HOST",
                              description="Bring HOST's copy of every remus disk of DOMAIN up to date "
                                          "from this host, live (what `xm remus-resync` does).")
    r.add_argument("domain", metavar="DOMAIN")
    r.add_argument("host", metavar="HOST")
    r.add_argument("--rate", type=_rate, default=None, metavar="RATE", help="cap reads at RATE bytes/s")
    r.add_argument("--verify", action="store_true", help="compare every block after the sync")
    r.add_argument("--discard-target", "--discard-peer", dest="discard_target", action="store_true",
                   help="split brain: HOST's copy loses its own writes; --discard-peer is an alias")
    r.add_argument("-s", "--ssh", default="ssh", metavar="SSHCMD", help="command to reach HOST (default ssh)")
    r.add_argument("--key", metavar="KEYFILE", help="shared key file for tcp:// disk destinations")
    r.add_argument("--dest", metavar="TEMPLATE", default=None,
                   help="where HOST's disk copies are (default '%%(host)s:%%(path)s')")
    _toolstack_opts(r)
    r.set_defaults(func=cmd_resync_domain)

    rs = subparsers.add_parser(
        "remus-sender", help="start, stop or ask about the Remus sender of a domain running here",
        description="The Remus sender (xend: the remus script; xl: xl remus) must run on the host "
                    "that runs the domain.  A failback run elsewhere starts it here with "
                    "'ssh HOST xen-remus remus-sender start ...'.  status exits 0 when it runs, 1 when not.")
    rs.add_argument("action", choices=("start", "stop", "status"))
    rs.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS",
                    help="start: the sender's options, DOMAIN and BACKUP (remus [-i MS] [-p PORT] "
                         "[--no-net] [--blackhole] DOMAIN HOST; --hold: the backup holds its copy paused when the "
                         "stream breaks); stop/status: DOMAIN")
    rs.set_defaults(func=cmd_remus_sender, json=False)

    s = subparsers.add_parser("status", help="Remus protection and failback state of the domains here")
    s.add_argument("domain", metavar="DOMAIN", nargs="?")
    _toolstack_opts(s)
    s.set_defaults(func=cmd_status)


def open_site(args, peer=True):
    """What ``--toolstack`` and its options build (wiring.open_site)."""
    return wiring.open_site(toolstack=args.toolstack, host=getattr(args, "host", None), peer=peer,
                            agent=args.agent, peer_agent=args.peer_agent, peer_uri=args.peer_uri,
                            ssh=getattr(args, "ssh", "ssh"), key_file=getattr(args, "key", None),
                            memory_only=bool(getattr(args, "no_disk", False)
                                             or getattr(args, "replicate_disk", None)),
                            tracker=getattr(args, "tracker", None))


def _parse_remus_args(args):
    """``[-i MS] [-p PORT] [--no-net] [--blackhole] [--hold] DOMAIN HOST`` -> remus_start kwargs."""
    sp = argparse.ArgumentParser(prog="xen-remus remus-sender start", add_help=False)
    sp.add_argument("-i", dest="interval", type=int, default=200)
    sp.add_argument("-p", dest="port", type=int, default=None)
    sp.add_argument("--no-net", dest="no_net", action="store_true")
    sp.add_argument("--blackhole", action="store_true")
    sp.add_argument("--hold", action="store_true")
    sp.add_argument("domain")
    sp.add_argument("host")
    try:
        ns = sp.parse_args(args)
    except SystemExit:
        raise FailbackError("remus-sender start: expected [-i MS] [-p PORT] [--no-net] [--blackhole] [--hold] "
                            "DOMAIN HOST, got %s" % " ".join(args))
    return ns


def cmd_remus_sender(args):
    ts = wiring.local_toolstack("xend")
    if args.action == "start":
        ns = _parse_remus_args(args.args)
        pid = ts.remus_start(ns.domain, ns.host, interval_ms=ns.interval, port=ns.port, net=not ns.no_net,
                             blackhole=ns.blackhole, hold=ns.hold)
        print("remus for %s toward %s: pid %s" % (ns.domain, ns.host, pid))
        return 0
    if len(args.args) != 1:
        raise FailbackError("remus-sender %s: expected DOMAIN, got %r" % (args.action, args.args))
    if args.action == "stop":
        return 0 if ts.remus_stop(args.args[0]) else 1
    return 0 if ts.remus_running(args.args[0]) else 1


def _options(args):
    opts = {"rate": getattr(args, "rate", None), "verify": getattr(args, "verify", False),
            "ssh": getattr(args, "ssh", "ssh"), "key_file": getattr(args, "key", None)}
    if getattr(args, "dest", None):
        opts["dest_template"] = args.dest
    for name, key in (("interval", "interval_ms"), ("port", "port"), ("local_host", "local_host"),
                      ("config", "config_file")):
        if getattr(args, name, None) is not None:
            opts[key] = getattr(args, name)
    if getattr(args, "no_net", False):
        opts["net"] = False
    if getattr(args, "no_disk", False):
        opts["disk"] = False
    if not getattr(args, "find_replicated", True):
        opts["find_replicated"] = False
    if hasattr(args, "replicate_timeout"):
        opts["replicate_timeout"] = args.replicate_timeout
    if getattr(args, "replicate_disk", None):
        vdev, control = args.replicate_disk
        opts["disk"] = False
        opts["replicate"] = model.ReplicatedDisk(vdev, control, args.replicate_timeout)
    if getattr(args, "discard_peer", False) or getattr(args, "discard_target", False):
        opts["discard_peer"] = True
    if getattr(args, "accept_disk_loss", False):
        opts["accept_disk_loss"] = True
    if getattr(args, "hold_backup", False):
        opts["hold_backup"] = True
    if getattr(args, "shared_disk", None):
        opts["shared_disks"] = list(args.shared_disk)
    return opts


def _emit_error(args, exc):
    if args.json:
        print(json.dumps({"result": "error", "error": str(exc), "state": getattr(exc, "state", None),
                          "step": getattr(exc, "step", None)}, sort_keys=True))


def _progress(args):
    """Progress lines for the user (stderr with --json); -q: the log file only."""
    import logging
    log = logging.getLogger("xen_remus_ext.cli")
    if getattr(args, "quiet", False):
        return lambda line: log.info("%s", line)
    if args.json:
        return lambda line: sys.stderr.write(line + "\n")
    return lambda line: print(line)


def cmd_failback(args):
    from xen_remus_ext.failback import api
    try:
        with open_site(args) as site:
            res = api.run_failback(site.toolstack, args.domain, args.host, site.peer,
                                   reverse_only=args.reverse_only, dry_run=args.dry_run, resume=args.resume,
                                   abort=args.abort, options=dict(_options(args), supervise=site.supervise),
                                   disk_sync=site.disk_sync, progress=_progress(args), clock=site.clock,
                                   xenstore=site.xenstore, peer_xenstore=site.peer_xenstore)
    except XenRemusError as exc:
        _emit_error(args, exc)
        raise
    if args.json:
        print(json.dumps(dict(res, result="ok" if res.get("ok", True) else "refused"), sort_keys=True))
    elif args.dry_run:
        print(format_plan(res))
    return 0 if res.get("ok", True) else 1


def cmd_protect(args):
    from xen_remus_ext.failback import api
    try:
        with open_site(args) as site:
            res = api.run_protect(site.toolstack, args.domain, args.host, site.peer, dry_run=args.dry_run,
                                  resume=args.resume, abort=args.abort,
                                  options=dict(_options(args), supervise=site.supervise),
                                  disk_sync=site.disk_sync, progress=_progress(args), clock=site.clock,
                                  xenstore=site.xenstore, peer_xenstore=site.peer_xenstore)
    except XenRemusError as exc:
        _emit_error(args, exc)
        raise
    if args.json:
        print(json.dumps(dict(res, result="ok" if res.get("ok", True) else "refused"), sort_keys=True))
    elif args.dry_run:
        print(format_plan(res))
    return 0 if res.get("ok", True) else 1


def format_plan(res):
    lines = ["%s of %s toward %s, from state %s:" % (res["mode"], res["domain"], res["host"], res["state"])]
    lines += ["  " + ln for ln in res["plan"]] or ["  (nothing left to do)"]
    lines.append("preflight:")
    for c in res["checks"]:
        lines.append("  %-4s %-16s %s" % ("ok" if c["ok"] else "FAIL", c["name"], c["detail"]))
    for d in res.get("disks", ()):
        lines.append("disk %s: %s -> %s (%s, %s bytes, tracker: %s%s)"
                     % (d["vdev"], d["src"], d["dest"], d.get("relation"), d.get("size"),
                        d.get("tracker") or "none: checksum final pass",
                        ": %s" % d["tracker_why"] if d.get("tracker_why") else ""))
    rep = res.get("replicate")
    if rep:
        lines.append("replicated disk %s: xen-remus replicate relay, control %s, timeout %g s"
                     % (rep["vdev"], rep["control"], rep["timeout"]))
    lines.append("journal: %s" % res["journal"])
    return "\n".join(lines)


def cmd_resync_domain(args):
    from xen_remus_ext.failback import api
    try:
        # resync-domain reaches the peer's disks, not its toolstack
        with open_site(args, peer=False) as site:
            res = api.resync_domain(site.toolstack, args.domain, args.host, peer_toolstack=site.peer,
                                    options=_options(args), disk_sync=site.disk_sync, progress=_progress(args))
    except XenRemusError as exc:
        _emit_error(args, exc)
        raise
    if args.json:
        print(json.dumps(dict(res, result="ok"), sort_keys=True))
    return 0


def cmd_status(args):
    from xen_remus_ext.failback import api
    try:
        with open_site(args, peer=False) as site:
            rows = api.status(site.toolstack, args.domain, xenstore=site.xenstore)
    except XenRemusError as exc:
        _emit_error(args, exc)
        raise
    if args.json:
        print(json.dumps({"result": "ok", "domains": rows}, sort_keys=True))
    else:
        print(format_status(rows))
    return 0


def format_status(rows):
    out = ["%-20s %5s %-8s %-11s %s" % ("Name", "ID", "State", "Protected", "Failback")]
    for r in rows:
        fb = r.get("failback")
        if fb is None:
            fbt = "-"
        elif "mode" not in fb:
            fbt = "journal unreadable: %s" % fb.get("error")
        else:
            fbt = "%s to %s: %s%s%s" % (fb["mode"], fb["host"], fb["state"],
                                        " (in %s)" % fb["step"] if fb.get("step") else "",
                                        "; error: %s" % fb["error"] if fb.get("error") else "")
        backup = r.get("backup")
        if backup is not None:   # Remus' copy on its backup: it protects nothing from here
            prot = "backup" if backup.get("state") == "receiving" else "backup:%s" % backup.get("state")
        else:
            prot = {True: "yes", False: "no", None: "?"}[r.get("protected")]
        keys = r.get("xenstore") or {}
        if keys.get("state"):
            fbt += "  [xenstore: %s, %s]" % (keys.get("role"), keys.get("state"))
        out.append("%-20s %5s %-8s %-11s %s" % (r["name"], "-" if r["domid"] is None else r["domid"],
                                                r["state"] or "(gone)", prot, fbt))
        rep = (fb or {}).get("replicate")
        if rep:
            out.append("    failback %s: replicated by xen-remus replicate, control %s, timeout %g s"
                       % (rep["vdev"], rep["control"], rep["timeout"]))
        for t in (fb or {}).get("trackers") or ():
            out.append("    failback %s: dirty-block tracker %s%s%s" % (
                t["vdev"], t.get("tracker") or "none (checksums)",
                " (%s)" % t["why"] if t.get("why") else "",
                "; final delta %s" % t["final"] if t.get("final") else ""))
        for d in r.get("disks") or ():
            if d.get("error"):
                out.append("    %s: generation unreadable: %s" % (d["vdev"], d["error"]))
            else:
                out.append("    %s %s: generation %s%s%s" % (
                    d["vdev"], "(backup copy)" if backup is not None else "-> %s" % d["backup"],
                    d["generation"] or "(none)",
                    ", writes since %s" % d["bitmap"] if d["bitmap"] else "",
                    "" if d["consistent"] in (True, None) else ", INCONSISTENT (interrupted resync target)"))
    return "\n".join(out)
