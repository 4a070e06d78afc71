"""``xen-remus sim ...`` and ``xen-remus demo``: the simulated Remus hosts.

``sim xenstored --socket PATH`` runs the xenstored double
(:mod:`xen_remus_ext.sim.xenstored`) alone, in the foreground.
``sim host CONFIG`` runs one simulated host (what the cluster spawns).
``sim cleanup`` removes network namespaces left by a killed controller.
``demo`` runs the whole cycle and prints a verdict (:mod:`xen_remus_ext.demo`).
"""
from __future__ import absolute_import, division, print_function

import argparse


def _at_least(kind, low, what):
    """An argparse type: ``kind(text)`` >= ``low``, else a usage error naming ``what``."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value >= low:
            raise argparse.ArgumentTypeError("%s: expected a number of at least %s, got %r" % (what, low, text))
        return value
    return parse


def register(subparsers):
    """Add this module's subcommands to ``subparsers``."""
    sim = subparsers.add_parser("sim", help="simulated Remus hosts (demo and scenario tests)")
    simsub = sim.add_subparsers(dest="sim_command", metavar="SIMCOMMAND")
    xsd = simsub.add_parser("xenstored", help="run the xenstored double in the foreground")
    from xen_remus_ext.sim import xenstored
    xenstored.build_parser(xsd)
    xsd.set_defaults(func=_run_xenstored)
    host = simsub.add_parser("host", help="run one simulated host (config JSON) in the foreground")
    host.add_argument("config", help="host config file (written by the sim cluster)")
    host.set_defaults(func=_run_host)
    clean = simsub.add_parser("cleanup", help="delete sim network namespaces whose creator is gone")
    clean.set_defaults(func=_run_cleanup)

    demo = subparsers.add_parser(
        "demo", help="protect -> failover -> failback -> re-protect on two simulated hosts")
    demo.add_argument("--json", action="store_true", help="print the verdict as one JSON object")
    demo.add_argument("--seconds", type=_at_least(float, 1.5, "seconds"), default=12.0,
                      help="working time, split over the three phases (default 12, at least 1.5)")
    demo.add_argument("--seed", type=int, default=None, help="random seed (default: random)")
    demo.add_argument("--method", choices=("auto", "failback", "resync", "migrate"), default="auto",
                      help="how the domain comes home: the failback command, the same steps by hand "
                           "(resync + migrate), or plain migrate (memory only: the stale-disk bug); "
                           "default auto")
    demo.add_argument("--interval", type=_at_least(int, 1, "interval"), default=100, metavar="MS",
                      help="Remus checkpoint interval (default 100)")
    demo.add_argument("--rate", type=_at_least(float, 1, "rate"), default=200.0,
                      help="guest writes per second (default 200)")
    demo.add_argument("--no-netns", action="store_true",
                      help="use 127.0.0.1 ports even when root (no network namespaces)")
    demo.set_defaults(func=_run_demo)


def _run_xenstored(args):
    from xen_remus_ext.sim import xenstored
    return xenstored.serve(args.socket, seed=not args.empty)


def _run_host(args):
    from xen_remus_ext.sim import host
    return host.main([args.config])


def _run_cleanup(args):
    from xen_remus_ext.sim import cluster
    for name in cluster.cleanup_stale():
        print("deleted netns %s" % name)
    return 0


def _run_demo(args):
    from xen_remus_ext import demo
    return demo.main(args)
