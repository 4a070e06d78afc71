"""``xen-remus ocf ACTION``: the Pacemaker resource agent's actions.

``/usr/lib/ocf/resource.d/xen-remus/remus`` runs this; the parameters
arrive as ``OCF_RESKEY_*`` (:mod:`xen_remus_ext.pacemaker.agent`).  The exit
status is the OCF code.
"""
from __future__ import absolute_import, division, print_function

import argparse


def register(subparsers):
    p = subparsers.add_parser("ocf", help="OCF resource agent actions (run by Pacemaker's remus agent)")
    p.add_argument("action", metavar="ACTION",
                   help="meta-data, validate-all, start, stop, monitor, promote, demote or notify")
    p.add_argument("extra", nargs="*", default=[], help=argparse.SUPPRESS)
    p.set_defaults(func=_run)


def _run(args):
    from xen_remus_ext.pacemaker import agent
    return agent.main(args.action, args.extra)
