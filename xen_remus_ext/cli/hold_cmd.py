"""``xen-remus hold receive|release|discard|show``: an xl Remus backup that
waits, paused, when its checkpoint stream breaks (toolstack/hold.py).

``xen-remus protect --hold-backup`` (and the Pacemaker agent) make ``xl
remus`` run ``xen-remus hold receive --domain DOM -- xl migrate-receive -r``
on the backup instead of xl's receiver alone.  On the backup, after the
primary is known dead (fenced): ``xen-remus hold release DOM`` resumes the
copy from its last committed checkpoint; ``xen-remus hold discard DOM``
destroys it without resuming it.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json


def register(subparsers):
    p = subparsers.add_parser(
        "hold", help="keep an xl Remus backup paused when its stream breaks; release or discard it",
        description="On an xl Remus backup: receive the checkpoint stream through a holder that, "
                    "when the stream breaks, keeps the copy paused at its last committed "
                    "checkpoint instead of letting xl resume it; release it (failover) or "
                    "discard it later.")
    sub = p.add_subparsers(dest="hold_command", metavar="ACTION")
    r = sub.add_parser("receive", help="run by xl remus on the backup (through protect --hold-backup)")
    r.add_argument("--domain", required=True, help="the protected domain's name")
    r.add_argument("receiver", nargs=argparse.REMAINDER, help="-- xl migrate-receive -r ...")
    r.set_defaults(func=_receive)
    for name, what in (("release", "resume the held copy from its last committed checkpoint (failover)"),
                       ("discard", "destroy the backup copy without resuming it"),
                       ("show", "print the holder's state as JSON")):
        s = sub.add_parser(name, help=what)
        s.add_argument("domain", metavar="DOMAIN")
        s.set_defaults(func=_ACTIONS[name])


def _receive(args):
    from xen_remus_ext.toolstack import hold
    receiver = list(args.receiver)
    if receiver and receiver[0] == "--":
        receiver = receiver[1:]
    return hold.receive_main(receiver, args.domain)


def _release(args):
    from xen_remus_ext.toolstack.xl import XlToolstack
    from xen_remus_ext.toolstack.runner import SubprocessRunner
    XlToolstack(SubprocessRunner()).remus_takeover(args.domain)
    print("%s: released; it runs from its last committed checkpoint" % args.domain)
    return 0


def _discard(args):
    from xen_remus_ext.toolstack.xl import XlToolstack
    from xen_remus_ext.toolstack.runner import SubprocessRunner
    XlToolstack(SubprocessRunner()).remus_discard(args.domain)
    print("%s: backup copy discarded" % args.domain)
    return 0


def _show(args):
    from xen_remus_ext.toolstack import hold
    st = hold.load(args.domain)
    print(json.dumps(st, sort_keys=True))
    return 0 if st is not None else 1


_ACTIONS = {"release": _release, "discard": _discard, "show": _show}
