"""``xen-remus sim ...``: the simulated Remus hosts (issue 4).

``sim xenstored --socket PATH`` runs the xenstored double
(:mod:`xen_remus_ext.sim.xenstored`) alone, in the foreground.
"""
from __future__ import absolute_import, division, print_function


def register(subparsers):
    """Add this module's subcommands to ``subparsers``."""
    sim = subparsers.add_parser("sim", help="simulated Remus hosts (demo and scenario tests)")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SIMCOMMAND")
    xsd = simsub.add_parser("xenstored", help="run the xenstored double in the foreground")
    from xen_remus_ext.sim import xenstored
    xenstored.build_parser(xsd)
    xsd.set_defaults(func=_run_xenstored)


def _run_xenstored(args):
    from xen_remus_ext.sim import xenstored
    return xenstored.serve(args.socket, seed=not args.empty)
