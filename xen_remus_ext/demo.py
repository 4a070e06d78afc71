"""``xen-remus demo``: the whole Remus cycle on two simulated hosts.

Create a domain on host A, protect it to B (``protect``: B's copy is
created and seeded, then Remus starts), let it work, SIGKILL host A,
watch B take over, keep working on B, restart A (its disk is now stale),
bring the domain home, protect it again, then stop and judge:

* ``acknowledged``: records the outside world was told are written (the
  observer's count, released by output commit while protected);
* ``lost``: acknowledged records missing from the final primary's disk;
* ``disks_identical``: the two copies' SHA-256 digests agree;
* ``downtime``: per phase, the longest time the outside world saw no new
  acknowledgement (the guest's visible pause).

How the domain comes home (``method``):

* ``failback``: the failback command (:mod:`xen_remus_ext.failback`);
* ``resync``: the same steps by hand: a checksum pre-copy from B to A
  while the domain runs, then pause, a tracked final delta, a memory
  migration left paused, Remus restarted A -> B, unpause;
* ``migrate``: ``xm migrate --live`` alone, the usual way home: memory
  only, so A runs on its stale disk and the writes made on B are lost.

Every operation a user runs (protect, failback, the resync, the migration,
starting Remus) goes through the adapters the composition root builds
(``wiring.open_site``, as the commands do: each host's agent, the peer's,
its disks).  The cluster's own handles on its hosts do only what nothing
but a simulator can: create a disk and a domain with a workload, power a
host off, read and check the disks for the verdict.
"""
from __future__ import absolute_import, division, print_function

import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import time

from xen_remus_ext import wiring
from xen_remus_ext.sim.cluster import Cluster, wait_for

LOG = logging.getLogger(__name__)

IMAGE = "/var/lib/xen/images/demo.img"
DOMAIN = "demo"
DISK_SIZE = 8 << 20
METHODS = ("auto", "failback", "resync", "migrate")


class Timeline(object):
    def __init__(self, out=None):
        self.t0 = time.time()
        self.rows = []
        self.out = out

    def add(self, text):
        t = time.time() - self.t0
        self.rows.append((round(t, 3), text))
        if self.out is not None:
            self.out.write("  %7.3fs  %s\n" % (t, text))
            self.out.flush()


def _failback_available():
    try:
        from xen_remus_ext.failback import orchestrator
    except ImportError:
        return False
    return hasattr(orchestrator, "Orchestrator")


def site(here, peer=None):
    """What a command run on host ``here`` toward ``peer`` gets: the
    adapters ``wiring.open_site`` builds from the hosts' agent addresses
    (``--toolstack sim --agent ... --peer-agent ...``)."""
    return wiring.open_site("sim", host=peer.name if peer is not None else None, agent=here.cfg["agent"],
                            peer_agent=peer.cfg["agent"] if peer is not None else None)


def domain_config(backup, observer, seed, rate):
    uname = "tap2:remus:%s:%d|aio:%s" % (backup.addr, backup.cfg["remus_port"], IMAGE)
    return {"name": DOMAIN, "memory": 64,
            "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
            "workload": {"rate": rate, "seed": seed, "observer": observer}}


def _committed(ts, dom, n):
    """Wait until ``n`` more checkpoints committed on the primary."""
    first = ts.sim_info(dom)["remus"]["commits"]
    wait_for(lambda: ts.sim_info(dom)["remus"]["commits"] >= first + n, 5.0,
             "%d checkpoints of %s" % (n, dom))


def bring_home_resync(A, B, tl, interval_ms):
    """The stand-in for failback: pre-copy, pause, final delta, migrate, protect."""
    with site(B, A) as b:
        tracker = b.toolstack.tracker_for(DOMAIN, "xvda")
        tracker.mark()
        r1 = b.toolstack.resync_to(IMAGE, "A", mode="checksum")
        tl.add("B -> A pre-copy (checksum, domain running): %d bytes over tcp in %.3fs"
               % (r1["bytes_sent"], r1["seconds"]))
        t_pause = time.time()
        b.toolstack.pause(DOMAIN)
        r2 = b.toolstack.resync_to(IMAGE, "A", mode="tracked", tracker=tracker)
        tl.add("B paused; final delta (tracked, %s extents): %d bytes"
               % (r2["extents"], r2["bytes_sent"]))
        b.toolstack.migrate(DOMAIN, "A", live=True, paused=True)
        tl.add("memory migrated B -> A (left paused)")
        b.peer.remus_start(DOMAIN, "B", interval_ms=interval_ms)
        b.peer.unpause(DOMAIN)
    tl.add("Remus A -> B restarted, domain unpaused on A (paused %.3fs)" % (time.time() - t_pause))


def protect(A, B, tl, interval_ms):
    """``xen-remus protect demo B`` run on A: B's missing copy is created
    sparse, seeded live, the last delta sent with the domain paused, Remus
    started, the domain unpaused."""
    from xen_remus_ext.failback import api
    with site(A, B) as a:
        res = api.run_protect(a.toolstack, DOMAIN, "B", peer_toolstack=a.peer,
                              options={"interval_ms": interval_ms, "local_host": "A"},
                              disk_sync=a.disk_sync, clock=a.clock, xenstore=a.xenstore,
                              peer_xenstore=a.peer_xenstore, progress=lambda line: tl.add("protect: " + line))
    tl.add("protect finished in state %s" % res["state"])


def bring_home_failback(A, B, tl, interval_ms):
    """``xen-remus failback demo A`` run on B."""
    from xen_remus_ext.failback import api
    with site(B, A) as b:
        res = api.run_failback(b.toolstack, DOMAIN, "A", peer_toolstack=b.peer,
                               options={"interval_ms": interval_ms, "local_host": "B"},
                               disk_sync=b.disk_sync, clock=b.clock, xenstore=b.xenstore,
                               peer_xenstore=b.peer_xenstore, progress=lambda line: tl.add("failback: " + line))
    tl.add("failback finished in state %s" % res["state"])


def bring_home_migrate(A, B, tl, interval_ms):
    with site(B, A) as b:
        b.toolstack.migrate(DOMAIN, "A", live=True)
        tl.add("xm migrate --live B -> A (memory only; A's disk is the stale one)")
        b.peer.remus_start(DOMAIN, "B", interval_ms=interval_ms)
    tl.add("Remus A -> B restarted on top of the stale disk")


def run(seconds=12.0, seed=None, method="auto", interval_ms=100, rate=200, netns=None, out=None):
    """Run the cycle; :returns: the verdict dict (see module doc)."""
    seed = random.randint(0, 1 << 30) if seed is None else seed
    rnd = random.Random(seed)
    if method == "auto":
        method = "failback" if _failback_available() else "resync"
    work = max(float(seconds), 1.5) / 3.0
    root = tempfile.mkdtemp(prefix="xre-demo-")
    saved_state = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(root, "state")
    tl = Timeline(out)
    try:
        with Cluster(root=os.path.join(root, "hosts"), netns=netns) as cl:
            verdict = _cycle(cl, tl, rnd, seed, method, work, interval_ms, rate)
    finally:
        if saved_state is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved_state
        shutil.rmtree(root, ignore_errors=True)
    verdict["timeline"] = tl.rows
    return verdict


def _cycle(cl, tl, rnd, seed, method, work, interval_ms, rate):
    from xen_remus_ext.resync import meta
    A, B = cl["A"], cl["B"]
    obs = cl.observer
    tl.add("hosts up: A pid %d at %s, B pid %d at %s (%s)"
           % (A.pid, A.addr, B.pid, B.addr, "network namespaces" if cl.netns else "127.0.0.1"))
    A.toolstack.disk_create(IMAGE, DISK_SIZE)
    tl.add("disk %s (%d MiB) on A only; B has no copy yet" % (IMAGE, DISK_SIZE >> 20))

    downtime = {}
    wseed = rnd.randint(1, 1 << 30)
    A.toolstack.create(domain_config(B, obs.path, wseed, rate), paused=False)
    tl.add("domain %s created on A, running unprotected" % DOMAIN)
    time.sleep(work * 0.2)
    t = time.time()
    before = obs.acked(DOMAIN)
    protect(A, B, tl, interval_ms)
    wait_for(lambda: obs.acked(DOMAIN) > before, 5.0, "output from A")
    downtime["protect"] = round(obs.silence(DOMAIN, t, time.time()), 3)
    ma, mb = meta.load(A.disk_path(IMAGE)), meta.load(B.disk_path(IMAGE))
    tl.add("protected to B (checkpoint every %d ms); generation A %s, B %s"
           % (interval_ms, ma.current if ma else None, mb.current if mb else None))

    time.sleep(work * rnd.uniform(0.8, 1.2))
    t_kill = time.time()
    acked_at_kill = obs.acked(DOMAIN)
    A.kill(power_off=True)
    tl.add("host A powered off: network cut, SIGKILL (acknowledged so far: %d records)"
           % acked_at_kill)
    wait_for(lambda: B.toolstack.sim_info(DOMAIN)["sim_state"] == "running", 5.0,
             "failover on B")
    tl.add("B took over: domain resumed from the last committed checkpoint")
    wait_for(lambda: obs.acked(DOMAIN) > acked_at_kill, 10.0, "output from B")
    downtime["failover"] = round(obs.silence(DOMAIN, t_kill, time.time()), 3)
    res = B.toolstack.disk_check(IMAGE, wseed, acked_at_kill)
    tl.add("check right after failover: %d of %d acknowledged records on B's disk, %d missing"
           % (res["checked"] - res["missing"], res["checked"], res["missing"]))
    lost_failover = res["missing"]

    A.start()
    tl.add("host A restarted (pid %d); its copy is stale" % A.pid)
    time.sleep(work * rnd.uniform(0.8, 1.2))

    t_home = time.time()
    before = obs.acked(DOMAIN)
    {"resync": bring_home_resync, "failback": bring_home_failback,
     "migrate": bring_home_migrate}[method](A, B, tl, interval_ms)
    wait_for(lambda: obs.acked(DOMAIN) > before, 5.0, "output from A")
    downtime["failback"] = round(obs.silence(DOMAIN, t_home, time.time()), 3)

    time.sleep(work * rnd.uniform(0.8, 1.2))
    A.toolstack.pause(DOMAIN)
    if A.toolstack.remus_running(DOMAIN):
        _committed(A.toolstack, DOMAIN, 2)
    acked = obs.acked(DOMAIN)
    tl.add("domain paused on A for the verdict; %d records acknowledged" % acked)
    res_a = A.toolstack.disk_check(IMAGE, wseed, acked)
    res_b = B.toolstack.disk_check(IMAGE, wseed, acked)
    dig_a, dig_b = A.toolstack.disk_digest(IMAGE), B.toolstack.disk_digest(IMAGE)
    A.toolstack.destroy(DOMAIN)
    return {
        "acknowledged": acked,
        "lost": res_a["missing"],
        "lost_at_failover": lost_failover,
        "lost_on_backup": res_b["missing"],
        "first_lost": res_a["first_missing"],
        "disks_identical": dig_a == dig_b,
        "digest": {"A": dig_a, "B": dig_b},
        "downtime": downtime,
        "method": method,
        "seed": seed,
        "netns": cl.netns,
    }


def format_verdict(v):
    lines = ["", "verdict (%s, seed %d):" % (v["method"], v["seed"]),
             "  acknowledged writes   %d" % v["acknowledged"],
             "  writes lost           %d%s" % (v["lost"], "" if not v["lost"] else
                                               "   first: %s" % v["first_lost"]),
             "  disks identical       %s   (A %s..., B %s...)"
             % ("yes" if v["disks_identical"] else "NO", v["digest"]["A"][:16], v["digest"]["B"][:16])]
    for phase in ("protect", "failover", "failback"):
        if phase in v["downtime"]:
            lines.append("  downtime %-12s %.3fs" % (phase, v["downtime"][phase]))
    ok = v["lost"] == 0 and v["disks_identical"]
    lines.append("  result                %s" % ("OK: 0 acknowledged writes lost" if ok else "FAILED"))
    return "\n".join(lines) + "\n"


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def main(args):
    """CLI entry (``xen-remus demo``).  :returns: exit status."""
    signal.signal(signal.SIGTERM, _terminate)   # so the cluster is cleaned up
    out = None if args.json else sys.stdout
    if out is not None:
        out.write("xen-remus demo: protect -> failover -> failback -> resync -> re-protect\n")
    v = run(seconds=args.seconds, seed=args.seed, method=args.method,
            interval_ms=args.interval, rate=args.rate,
            netns=False if args.no_netns else None, out=out)
    if args.json:
        sys.stdout.write(json.dumps({
            "acknowledged": v["acknowledged"], "lost": v["lost"],
            "disks_identical": v["disks_identical"], "downtime": v["downtime"],
            "method": v["method"], "seed": v["seed"], "netns": v["netns"],
            "lost_at_failover": v["lost_at_failover"]}, sort_keys=True) + "\n")
    else:
        sys.stdout.write(format_verdict(v))
    return 0 if v["lost"] == 0 and v["disks_identical"] else 1

