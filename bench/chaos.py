#!/usr/bin/env python3
"""``make chaos``: the fault campaign (docs/chaos.md).

``bench/chaos.py [--runs N] [--seed S] [--kinds K,K] [--json FILE] [--keep]``
runs N seeded random faults (SIGKILL of the resync sender, receiver, the
failback orchestrator or a simulated host; a cut link; ENOSPC on the
target; a torn or corrupted resume journal), recovers from each, checks
the disks byte by byte and the acknowledged writes, and prints one table
row per fault kind and the line
``recovered R/N, bytes differing B, acknowledged writes lost L``.
Exit status 0 only when every run recovered with nothing lost.
"""
from __future__ import absolute_import, division, print_function

import argparse
import json
import logging
import os
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.chaos.faults import campaign  # noqa: E402


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--kinds", default=None, help="comma-separated subset of: %s" % ", ".join(campaign.ALL_KINDS))
    p.add_argument("--json", metavar="FILE", help="write every run's result to FILE")
    p.add_argument("--work", metavar="DIR", help="work directory (default: a temporary one, removed)")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per run")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    kinds = args.kinds.split(",") if args.kinds else None
    if kinds:
        bad = [k for k in kinds if k not in campaign.ALL_KINDS]
        if bad:
            p.error("unknown fault kind(s): %s" % ", ".join(bad))
    t0 = time.time()
    # SIGTERM unwinds like ^C: the clean-up registry removes namespaces, mounts, processes
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    def log(res):
        if not args.quiet:
            print("%3d %-18s %-9s %6.2fs  %s" % (res["index"], res["kind"],
                                                "ok" if res["recovered"] else "FAILED", res["seconds"],
                                                "; ".join(res.get("notes") or [])[:1500]))
            if not res["recovered"] and res.get("trace"):
                print(res["trace"])
            sys.stdout.flush()

    results = campaign.run_campaign(args.runs, args.seed, kinds=kinds, work=args.work, log=log)
    print()
    print("chaos: %d runs, seed %d, %.0f s" % (len(results), args.seed, time.time() - t0))
    print(campaign.format_table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, sort_keys=True)
    _, totals = campaign.summarize(results)
    ok = totals["recovered"] == totals["runs"] and not totals["bytes_differing"] and not totals["writes_lost"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
