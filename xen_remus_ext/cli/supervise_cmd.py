"""``xen-remus supervise [DOMAIN...]``: rotate disk generations at the
moment a copy starts taking writes its peer does not see
(failback/watch.py has the rule).

``protect`` and failback's protect step start one on the primary and on the
backup (``--daemon``: detached, one per host, its PID in
``STATE_DIR/supervise.pid``); the Debian package ships a service for it.
``--once`` looks once (with ``--grace 0``: rotates what qualifies now).
"""
from __future__ import absolute_import, division, print_function

import errno
import json
import logging
import os
import signal
import sys

from xen_remus_ext.errors import ValidationError

LOG = logging.getLogger(__name__)


def register(subparsers):
    p = subparsers.add_parser(
        "supervise", help="rotate disk generations when a domain runs here without Remus",
        description="Watch the domains here (or only DOMAIN...): one that runs unpaused with no Remus "
                    "sender here and no protect or failback under way, for --grace seconds, takes writes "
                    "its peer does not see; each of its remus disk copies still in step with the peer gets "
                    "a new generation (failover on the backup, replication lost on the primary, a guest "
                    "started again outside protection).")
    p.add_argument("domains", metavar="DOMAIN", nargs="*")
    p.add_argument("--interval", type=float, default=1.0, metavar="S",
                   help="seconds between looks (default 1; while the toolstack does not answer, "
                        "twice as long after each failed look, up to 60)")
    p.add_argument("--grace", type=float, default=10.0, metavar="S",
                   help="seconds a domain must run unprotected before its copies rotate (default 10)")
    p.add_argument("--once", action="store_true", help="look once and exit")
    p.add_argument("--daemon", action="store_true",
                   help="detach; one supervisor per host (exits 0 at once when one runs already)")
    from xen_remus_ext.cli.failback_cmd import TOOLSTACKS
    p.add_argument("--toolstack", choices=TOOLSTACKS, default=None,
                   help="toolstack to watch: xend or xl (default: xend if it runs here, else xl if present, "
                        "else xend)")
    p.add_argument("--agent", metavar="ADDR", help="sim: this host's agent")
    p.add_argument("--json", action="store_true", help="--once: print the rotations as one JSON object")
    p.set_defaults(func=cmd_supervise)


def pid_file():
    from xen_remus_ext.paths import state_dir
    return os.path.join(state_dir(), "supervise.pid")


def running_pid():
    """The PID of this host's supervisor, or None."""
    try:
        with open(pid_file()) as f:
            pid = int(f.read().strip())
    except (IOError, OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except OSError as exc:
        if exc.errno == errno.EPERM:
            return pid
        return None
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            if b"supervise" not in f.read():
                return None     # the PID was reused by something else
    except (IOError, OSError):
        pass
    return pid


def _write_pid():
    path = pid_file()
    d = os.path.dirname(path)
    if not os.path.isdir(d):
        os.makedirs(d, 0o700)
    with open(path, "w") as f:
        f.write("%d\n" % os.getpid())


def _detach():
    """Classic double fork; :returns: True in the daemon, False in the caller."""
    if os.fork() != 0:
        return False
    os.setsid()
    if os.fork() != 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    return True


def cmd_supervise(args):
    if args.interval <= 0 or args.grace < 0:
        raise ValidationError("supervise: expected --interval > 0 and --grace >= 0, got %s and %s"
                              % (args.interval, args.grace))
    from xen_remus_ext import wiring
    from xen_remus_ext.failback.watch import Watcher
    ts = wiring.local_toolstack(args.toolstack, agent=args.agent)
    watcher = Watcher(ts, wiring.SystemClock(), grace=args.grace, domains=args.domains or None,
                      sender_here=wiring.sender_process_checker(args.toolstack))
    if args.once:
        rotated = watcher.poll()
        if args.json:
            print(json.dumps({"result": "ok", "rotated": rotated}, sort_keys=True))
        elif not args.quiet:
            for r in rotated:
                print("%s %s: generation %s -> %s" % (r["path"], r["vdev"], r["old"], r["new"]))
        return 0
    if args.daemon:
        pid = running_pid()
        if pid is not None:
            if not args.quiet:
                print("xen-remus supervise: already running (pid %d)" % pid)
            return 0
        sys.stdout.flush()
        if not _detach():
            return 0
    if running_pid() not in (None, os.getpid()):
        LOG.info("supervise: another supervisor runs (pid %s); exiting", running_pid())
        return 0
    _write_pid()
    stopping = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stopping.append(signum))
    LOG.info("supervise start: pid %d, %s, grace %.0f s", os.getpid(),
             "domains " + " ".join(args.domains) if args.domains else "every domain", args.grace)
    try:
        watcher.run(interval=args.interval, stop=lambda: bool(stopping))
    finally:
        if running_pid() == os.getpid():
            try:
                os.unlink(pid_file())
            except OSError:
                pass
        LOG.info("supervise end: pid %d", os.getpid())
    return 0
