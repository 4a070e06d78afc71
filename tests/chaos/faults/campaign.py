"""The fault campaign: N runs with seeded random fault kinds, and the table.

``run_campaign(runs, seed, kinds=None, work=None, log=None)`` returns the
list of per-run result dicts; :func:`format_table` turns them into the
summary (one line per fault kind, then the totals line
``recovered R/N, bytes differing B, acknowledged writes lost L``).
"""
from __future__ import absolute_import, division, print_function

import binascii
import logging
import os
import random
import tempfile
import time
import traceback

from tests.chaos.faults import resync_faults, sim_faults
from tests.chaos.faults.registry import Registry

LOG = logging.getLogger(__name__)

ALL_KINDS = resync_faults.KINDS + sim_faults.KINDS


def available_kinds(netns):
    return tuple(k for k in ALL_KINDS
                 if netns or (k not in resync_faults.NEEDS_NETNS and k not in sim_faults.NEEDS_NETNS))


class Context(object):
    """What the runs share: the registry, a work tmpfs, the network, a key."""

    def __init__(self, reg, work, netns):
        self.reg = reg
        self.work = work
        self.port = resync_faults.PORT
        self.net = resync_faults.Net(reg, netns)
        if not netns:
            import socket
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
            s.close()
        self.key = os.path.join(work, "key")
        fd = os.open(self.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.write(fd, binascii.hexlify(os.urandom(24)))
        os.close(fd)
        self.sim = None

    def cluster(self):
        if self.sim is None:
            self.sim = sim_faults.SimBench(self.reg, os.path.join(self.work, "sim"))
        return self.sim


def run_campaign(runs, seed, kinds=None, work=None, netns=None, log=None):
    """:returns: list of result dicts, one per run (``kind, recovered,
    bytes_differing, writes_lost, false_consistent, recovery_s, notes``)."""
    if netns is None:
        netns = os.geteuid() == 0
    kinds = tuple(kinds or available_kinds(netns))
    rng = random.Random(seed)
    rare = [k for k in kinds if k in resync_faults.RARE]
    common = [k for k in kinds if k not in resync_faults.RARE] or rare
    n_rare = min(runs, len(rare) * (runs // resync_faults.RARE_EVERY)) if common != rare else 0
    plan = [rare[i % len(rare)] for i in range(n_rare)] + \
        [common[i % len(common)] for i in range(runs - n_rare)]
    rng.shuffle(plan)
    results = []
    saved_state = os.environ.get("XEN_REMUS_STATE_DIR")
    with Registry() as reg:
        base = work or tempfile.mkdtemp(prefix="xre-chaos-")
        if work is None:
            reg.tree(base)
        if netns and work is None:   # a given work dir keeps every run's log afterwards
            reg.tmpfs(os.path.join(base, "tmpfs"), 1 << 30)
            base = os.path.join(base, "tmpfs")
        ctx = Context(reg, base, netns)
        try:
            for i, kind in enumerate(plan):
                run_rng = random.Random(rng.getrandbits(64))
                t0 = time.time()
                runner = None
                try:
                    cls = sim_faults.SimRun if kind in sim_faults.KINDS else resync_faults.ResyncRun
                    runner = cls(ctx, kind, run_rng, i)
                    res = runner.execute()
                except Exception as exc:   # a run that blows up is reported, not fatal
                    notes = list(getattr(runner, "notes", None) or [])
                    res = {"kind": kind, "recovered": False, "bytes_differing": None, "writes_lost": 0,
                           "false_consistent": 0, "notes": notes + ["run failed: %s" % exc],
                           "trace": traceback.format_exc()}
                res["index"] = i
                res["seconds"] = round(time.time() - t0, 2)
                results.append(res)
                if log is not None:
                    log(res)
        finally:
            if ctx.sim is not None:
                ctx.sim.close()
            if saved_state is None:
                os.environ.pop("XEN_REMUS_STATE_DIR", None)
            else:
                os.environ["XEN_REMUS_STATE_DIR"] = saved_state
    return results


def summarize(results):
    """:returns: (rows, totals); a row: kind, runs, landed (the fault struck
    while the operation was still running), recovered, runbook (of those
    recovered, how many needed the operator runbook of docs/chaos.md rather
    than a rerun), bytes differing,
    writes lost, false consistent, median and max recovery s."""
    rows = []
    for kind in sorted(set(r["kind"] for r in results)):
        rs = [r for r in results if r["kind"] == kind]
        times = sorted(r["recovery_s"] for r in rs if r.get("recovery_s") is not None)
        rows.append({"kind": kind, "runs": len(rs), "recovered": sum(1 for r in rs if r["recovered"]),
                     "landed": sum(1 for r in rs if r.get("landed")),
                     "runbook": sum(1 for r in rs if r.get("runbook") and r["recovered"]),
                     "bytes_differing": sum(r["bytes_differing"] or 0 for r in rs),
                     "unknown": sum(1 for r in rs if r["bytes_differing"] is None),
                     "writes_lost": sum(r["writes_lost"] or 0 for r in rs),
                     "false_consistent": sum(r["false_consistent"] or 0 for r in rs),
                     "median_s": times[len(times) // 2] if times else None,
                     "max_s": times[-1] if times else None})
    totals = {"runs": len(results), "recovered": sum(1 for r in results if r["recovered"]),
              "bytes_differing": sum(r["bytes_differing"] or 0 for r in results),
              "writes_lost": sum(r["writes_lost"] or 0 for r in results)}
    return rows, totals


def _fmt_s(v):
    return "-" if v is None else "%.2f" % v


def format_table(results):
    rows, totals = summarize(results)
    head = ("fault kind", "runs", "mid-run", "recovered", "by runbook", "bytes differing", "writes lost",
            "false consistent", "recover s (median)", "recover s (max)")
    lines = [head]
    for r in rows:
        diff = str(r["bytes_differing"]) + (" (+%d unmeasured)" % r["unknown"] if r["unknown"] else "")
        lines.append((r["kind"], str(r["runs"]), str(r["landed"]), str(r["recovered"]), str(r["runbook"]), diff,
                      str(r["writes_lost"]),
                      str(r["false_consistent"]), _fmt_s(r["median_s"]), _fmt_s(r["max_s"])))
    widths = [max(len(row[i]) for row in lines) for i in range(len(head))]
    out = []
    for n, row in enumerate(lines):
        out.append("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    out.append("recovered %d/%d, bytes differing %d, acknowledged writes lost %d"
               % (totals["recovered"], totals["runs"], totals["bytes_differing"], totals["writes_lost"]))
    return "\n".join(out)
