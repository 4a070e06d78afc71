#!/usr/bin/env python3
"""Benchmark of the failback's downtime against its peers, measured in the same run.

Two simulated hosts (separate processes, network namespaces when root) with
real image files.  For each row a domain is protected A -> B, A is powered
off, B takes over, A comes back with its stale copy and B keeps writing; then
the domain is brought home to A, one way per row:

- ours: ``failback`` (live pre-copy while the domain runs on B, migration
  paused on arrival, the tracked final delta, Remus A -> B, unpause);
- checksum final: a checksum pre-copy while it runs, then pause and a second,
  untracked checksum pass (both copies read and hashed whole) while paused;
- full copy (engine): pause, the whole image sent by ``resync --mode full``
  over TCP, as a ``dd`` across the link would;
- dd (local): pause, ``dd`` of B's image file onto A's on the same machine
  (conv=fdatasync): the floor of "shut the guest down and dd the disk";

each naive row then migrates, restarts Remus and unpauses as ours does.

The downtime of a row is what the hosts saw: from B stopping the domain
(``pause`` or ``migrate-pause``) to A letting it run (``unpause``), from the
hosts' own event logs on this machine's clock.  The outside world's longest
silence (no new acknowledgement, which includes Remus' output commit) is
printed beside it.  Every row is judged: no acknowledged record missing on
either copy, and the two copies identical.

Usage: ``bench/downtime.py [--size 256M] [--rate 400] [--batch 8] [--repeat 3] [--only ROW,...]``
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TOP = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TOP)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from resync import log, make_random  # noqa: E402

from xen_remus_ext.errors import ToolstackError  # noqa: E402
from xen_remus_ext.resync.plan import parse_size  # noqa: E402
from xen_remus_ext.sim.cluster import Cluster, wait_for  # noqa: E402

MiB = 1 << 20
SEED = 77
INTERVAL_MS = 50


def failed_over(cl, name, base, size, rate, batch, run_s):
    """``name`` protected A -> B on a copy of ``base`` (both hosts), A powered
    off, B running it, A back with its stale copy while B writes ``run_s``."""
    return cl.failed_over(name, size, {"rate": rate, "batch": batch, "seed": SEED}, run_s=run_s, after_s=run_s,
                          fill=base, timeout=60)


def ours(cl, name, image):
    from xen_remus_ext.failback import api, machine
    from xen_remus_ext.sim.disksync import SimDiskSync
    A, B = cl["A"], cl["B"]
    res = api.run_failback(B.toolstack, name, "A", peer_toolstack=A.toolstack,
                           options={"local_host": "B", "interval_ms": INTERVAL_MS},
                           disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
    if res["state"] != machine.DONE:
        raise SystemExit("bench: failback of %s ended in %s" % (name, res["state"]))
    return res["disks"][0]["final"]["bytes_sent"]


def _home_paused(cl, name):
    """The naive rows' common end: migrate (paused on arrival), Remus A -> B, unpause."""
    A, B = cl["A"], cl["B"]
    B.toolstack.migrate(name, "A", live=True, paused=True)
    A.toolstack.remus_start(name, "B", interval_ms=INTERVAL_MS)
    A.toolstack.unpause(name)


def checksum_final(cl, name, image):
    B = cl["B"]
    B.toolstack.resync_to(image, "A", mode="checksum")
    B.toolstack.pause(name)
    sent = B.toolstack.resync_to(image, "A", mode="checksum")["bytes_sent"]
    _home_paused(cl, name)
    return sent


def full_engine(cl, name, image):
    B = cl["B"]
    B.toolstack.pause(name)
    sent = B.toolstack.resync_to(image, "A", mode="full")["bytes_sent"]
    _home_paused(cl, name)
    return sent


def dd_local(cl, name, image):
    A, B = cl["A"], cl["B"]
    B.toolstack.pause(name)
    subprocess.check_call(["dd", "if=" + B.disk_path(image), "of=" + A.disk_path(image), "bs=1M",
                           "conv=fdatasync,notrunc", "status=none"])
    _home_paused(cl, name)
    return os.path.getsize(B.disk_path(image))


ROWS = [("ours: failback (tracked final delta)", "ours", ours),
        ("checksum final pass (untracked)", "checksum", checksum_final),
        ("full copy paused (engine, tcp)", "full", full_engine),
        ("dd paused (local file copy)", "dd", dd_local)]


def hosts_downtime(cl, name, since):
    """From B stopping ``name`` to A unpausing it, by the hosts' events."""
    A, B = cl["A"], cl["B"]
    stop = [e["t"] for e in B.toolstack.events(since["B"])
            if e["kind"] in ("pause", "migrate-pause") and e["details"][0] == name]
    run = [e["t"] for e in A.toolstack.events(since["A"]) if e["kind"] == "unpause" and e["details"][0] == name]
    if not stop or not run:
        raise SystemExit("bench: %s: the hosts logged no pause on B (%s) or unpause on A (%s)" % (name, stop, run))
    return run[-1] - stop[0]


def judge(cl, name, image):
    """Pause on A after a few committed checkpoints: every acknowledged record
    on both copies, the copies identical.  :returns: (acked, ok)."""
    A, B = cl["A"], cl["B"]
    first = A.toolstack.sim_info(name)["remus"]["commits"]
    wait_for(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= first + 3, 60, "checkpoints of %s" % name)
    A.toolstack.pause(name)
    c = A.toolstack.sim_info(name)["remus"]["commits"]
    wait_for(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 60, "a last checkpoint of %s" % name)
    acked = cl.observer.acked(name)
    miss_a = A.toolstack.disk_check(image, SEED, acked)["missing"]
    miss_b = B.toolstack.disk_check(image, SEED, acked)["missing"]
    same = A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)
    A.toolstack.remus_stop(name)
    for h in (A, B):
        try:
            h.toolstack.destroy(name)
        except ToolstackError:
            pass            # B keeps no copy after remus_stop
    for h in (A, B):
        try:
            os.unlink(h.disk_path(image))
        except OSError:
            pass
    return acked, miss_a == 0 and miss_b == 0 and same, (miss_a, miss_b, same)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="256M", help="the domain's disk (random content)")
    ap.add_argument("--rate", type=int, default=400, help="guest writes per second")
    ap.add_argument("--batch", type=int, default=8, help="512-byte records per write (8 = 4 KiB)")
    ap.add_argument("--run", type=float, default=1.0, help="seconds the guest runs before and after the failover")
    ap.add_argument("--repeat", type=int, default=3, help="runs per row (taking turns); the median is reported")
    ap.add_argument("--only", default="", help="rows by key: " + ",".join(k for _, k, _ in ROWS))
    ap.add_argument("--dir", default=None)
    args = ap.parse_args(argv)
    size = parse_size(args.size)
    size -= size % MiB
    keys = [k for k in args.only.split(",") if k] or [k for _, k, _ in ROWS]
    rows = [r for r in ROWS if r[1] in keys]
    if "ours" not in keys or len(rows) < 2:
        raise SystemExit("bench: --only must keep ours and at least one peer (%s)"
                         % ",".join(k for _, k, _ in ROWS))
    t_start = time.time()
    d = args.dir or tempfile.mkdtemp(prefix="xre-bench-downtime-", dir="/var/tmp")
    saved = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(d, "state")
    base = os.path.join(d, "base.img")
    make_random(base, size)
    got = dict((k, []) for _, k, _ in rows)
    ok_all = True
    try:
        with Cluster(root=os.path.join(d, "hosts")) as cl:
            n = 0
            for rep in range(args.repeat):
                order = rows if rep % 2 == 0 else list(reversed(rows))
                for label, key, fn in order:
                    n += 1
                    name = "dt%d" % n
                    image = failed_over(cl, name, base, size, args.rate, args.batch, args.run)
                    since = dict((h, len(cl[h].toolstack.events())) for h in ("A", "B"))
                    t0, before = time.time(), cl.observer.acked(name)
                    sent = fn(cl, name, image)
                    down = hosts_downtime(cl, name, since)
                    wait_for(lambda n=name, b=before: cl.observer.acked(n) > b, 60, "output of %s from A" % name)
                    silence = cl.observer.silence(name, t0, time.time())
                    acked, ok, why = judge(cl, name, image)
                    ok_all = ok_all and ok
                    got[key].append((down, silence, sent, ok))
                    log("%-38s downtime %7.3f s  silence %7.3f s  sent while paused %s  acked %d  %s"
                        % (label, down, silence, "{:,}".format(sent), acked,
                           "ok" if ok else "FAILED %s" % (why,)))
            netns = cl.netns
    finally:
        if saved is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved
        shutil.rmtree(d, ignore_errors=True)
    try:
        load = "%.1f" % os.getloadavg()[0]
    except OSError:
        load = "?"
    print("failback downtime, %d MiB disk, guest writing %d x %d B/s, %d run(s) a row taking turns, %s,"
          " load %s" % (size // MiB, args.rate, 512 * args.batch, args.repeat,
                        "network namespaces" if netns else "127.0.0.1", load))
    print("| row | downtime s (median) | runs | silence s (median) | bytes sent while paused | judged |")
    print("|---|---|---|---|---|---|")
    med = {}
    for label, key, _ in rows:
        runs = got[key]
        med[key] = statistics.median(r[0] for r in runs)
        print("| %s | %.3f | %s | %.3f | %s | %s |"
              % (label, med[key], " ".join("%.3f" % r[0] for r in runs), statistics.median(r[1] for r in runs),
                 "{:,}".format(int(statistics.median(r[2] for r in runs))),
                 "ok" if all(r[3] for r in runs) else "FAILED"))
    for _label, key, _ in rows:
        if key != "ours":
            print("%s / ours: downtime %.1fx" % (key, med[key] / med["ours"]))
    print("(%.0f s in all)" % (time.time() - t_start))
    return 0 if ok_all else 1


if __name__ == "__main__":
    sys.exit(main())
