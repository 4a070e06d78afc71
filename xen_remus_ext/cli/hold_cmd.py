"""``xen-remus hold receive|release|discard|show``: a Remus backup that waits,
paused, when its checkpoint stream breaks.

``xen-remus protect --hold-backup`` (and the Pacemaker agent) ask for the
hold.  On xl, ``xl remus`` then runs ``xen-remus hold receive --domain DOM
-- xl migrate-receive -r`` on the backup instead of xl's receiver alone
(toolstack/hold.py).  On xend, the remus script marks its stream and the
backup's patched xend restores that copy paused and keeps it paused
(xend/hold.py).  On the backup, after the primary is known dead (fenced):
``xen-remus hold release DOM`` resumes the copy from its last committed
checkpoint; ``xen-remus hold discard DOM`` destroys it without resuming it;
``xen-remus hold show DOM`` prints its state as JSON.  release, discard and
show act on this host's toolstack (``--toolstack``, default: xend if it
runs here, else xl if present, else xend).
"""
from __future__ import absolute_import, division, print_function

import argparse
import json


def register(subparsers):
    p = subparsers.add_parser(
        "hold", help="keep a Remus backup paused when its stream breaks; release or discard it",
        description="On a Remus backup: a copy whose checkpoint stream breaks stays paused at its "
                    "last committed checkpoint instead of resuming by itself (xl: through a holder "
                    "in front of xl's receiver; xend: through the patched xend, for streams "
                    "started with protect --hold-backup); release it (failover) or discard it later.")
    sub = p.add_subparsers(dest="hold_command", metavar="ACTION")
    r = sub.add_parser("receive", help="run by xl remus on the backup (through protect --hold-backup)")
    r.add_argument("--domain", required=True, help="the protected domain's name")
    r.add_argument("receiver", nargs=argparse.REMAINDER, help="-- xl migrate-receive -r ...")
    r.set_defaults(func=_receive)
    for name, what in (("release", "resume the held copy from its last committed checkpoint (failover)"),
                       ("discard", "destroy the backup copy without resuming it"),
                       ("show", "print the held copy's state as JSON")):
        s = sub.add_parser(name, help=what)
        s.add_argument("domain", metavar="DOMAIN")
        s.add_argument("--toolstack", choices=("xl", "xend"), default=None,
                       help="this host's toolstack (default: xend if it runs here, else xl if present, else xend)")
        s.set_defaults(func=_ACTIONS[name])


def _kind(args):
    from xen_remus_ext import wiring
    return args.toolstack or wiring.default_toolstack()


def _toolstack(args):
    from xen_remus_ext.toolstack.runner import SubprocessRunner
    if _kind(args) == "xend":
        from xen_remus_ext.toolstack.xend import XendToolstack
        return XendToolstack(runner=SubprocessRunner())
    from xen_remus_ext.toolstack.xl import XlToolstack
    return XlToolstack(SubprocessRunner())


def _receive(args):
    from xen_remus_ext.toolstack import hold
    receiver = list(args.receiver)
    if receiver and receiver[0] == "--":
        receiver = receiver[1:]
    return hold.receive_main(receiver, args.domain)


def _release(args):
    _toolstack(args).remus_takeover(args.domain)
    print("%s: released; it runs from its last committed checkpoint" % args.domain)
    return 0


def _discard(args):
    _toolstack(args).remus_discard(args.domain)
    print("%s: backup copy discarded" % args.domain)
    return 0


def _show(args):
    if _kind(args) == "xend":
        from xen_remus_ext.errors import ToolstackError
        from xen_remus_ext.xend import hold as xend_hold
        try:
            st = xend_hold.load(args.domain)
        except ValueError as exc:
            raise ToolstackError(str(exc))
    else:
        from xen_remus_ext.toolstack import hold
        st = hold.load(args.domain)
    print(json.dumps(st, sort_keys=True))
    return 0 if st is not None else 1


_ACTIONS = {"release": _release, "discard": _discard, "show": _show}
