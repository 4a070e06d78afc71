"""Downtime of ``failback`` for a 1 GiB disk under a 10 MB/s write load (simulator).

The guest is asked to write 4 KiB of checksummed records 3000 times a second
(12.3 MB/s; on a quiet machine it sustains 10-12 MB/s, on an oversubscribed
one less) while the failback pre-copies, migrates (paused on arrival, as
``xl migrate -p``), sends the final tracked delta, restarts Remus and unpauses.

What is judged holds on any machine, however loaded: no acknowledged record
lost, the copies identical, the guest ran (and wrote) through the whole
pre-copy, and from the hosts' own events, between B stopping the domain for
the migration and A letting it run, the only disk transfer was one tracked
delta (its size bounded by the writes, not the 1 GiB disk).  The downtime in
seconds (the guest's longest silence, the runner's spans, the hosts' span)
and the write rate are printed, not judged: wall-clock targets on a shared
machine are the benchmarks' business, not a test's.

Stands in for: two Xen hosts with xl and Remus (docs/xen-facts.md sections 4, 5, 6).
"""
from __future__ import absolute_import, division, print_function

import json
import time

import pytest

from tests.scenario.failback_world import _shared_state, _wait, cluster, failed_over, judge  # noqa: F401,F811
from xen_remus_ext.failback import api, machine
from xen_remus_ext.sim.disksync import SimDiskSync

RESULTS = {}


#: the events of the domain (or its image) on A and B, in order, from the
#: moment B stops it for the migration to the moment A lets it run: the only
#: disk transfer while it cannot run is one tracked delta.  Each follows the
#: one before it causally (a host logs after its peer answered), so no
#: machine load reorders them.
DOWNTIME_EVENTS = [("B", "migrate-pause"), ("A", "migrate-in"), ("B", "migrate-out"),
                   ("B", "resync", "tracked"), ("B", "remus-backup"), ("A", "remus-start"), ("A", "unpause")]


def _ours(e, name, image):
    return (e["details"] or [None])[0] in (name, image)


@pytest.mark.slow
def test_downtime_1gib_disk_under_10mbps_write_load(cluster):  # noqa: F811
    """1 GiB disk, the guest writing 4 KiB of records 3000 times a second."""
    name = "fb3"
    A, B, image = failed_over(cluster, name, 1 << 30, rate=3000, batch=8, run_s=0.5, after_s=1.0)
    t_home, n_home = time.time(), cluster.observer.acked(name)
    since = dict((h.name, len(h.toolstack.events())) for h in (A, B))
    res = api.run_failback(B.toolstack, name, "A", peer_toolstack=A.toolstack,
                           options={"local_host": "B", "interval_ms": 50},
                           disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
    assert res["state"] == machine.DONE
    failback_s = time.time() - t_home
    _wait(lambda: cluster.observer.acked(name) > 0, 60.0, "output from A")
    time.sleep(0.3)
    silence = cluster.observer.silence(name, t_home, time.time())
    # the guest's write rate while it ran (records are 512 bytes; the
    # failback's own silence is not the guest's fault): reported, not judged
    load = (cluster.observer.acked(name) - n_home) * 512 / (time.time() - t_home - silence)
    events = sorted((e for h in (A, B) for e in h.toolstack.events(since[h.name]) if _ours(e, name, image)),
                    key=lambda e: e["t"])
    acked, res_a, res_b, identical = judge(cluster, A, B, name, image)
    stop = [i for i, e in enumerate(events) if e["kind"] == "migrate-pause"]
    run = [i for i, e in enumerate(events) if e["kind"] == "unpause"]
    hosts_saw = events[run[0]]["t"] - events[stop[0]]["t"] if stop and run else None
    final = res["disks"][0]["final"]
    precopy = res["disks"][0]["precopy"]
    RESULTS.update(load_bytes_per_s=round(load), guest_silence_s=round(silence, 3),
                   downtime_s=round(res["downtime"], 3), downtime_max_s=round(res["downtime_max"], 3),
                   downtime_hosts_s=round(hosts_saw, 3) if hosts_saw is not None else None,
                   final_delta_bytes=final["bytes_sent"], final_delta_mode=final["mode"],
                   precopy=[(p["mode"], p["bytes_sent"], p["seconds"]) for p in precopy],
                   failback_s=round(failback_s, 2), acked=acked,
                   events=[(e["host"], e["kind"]) for e in events])
    print("failback 1 GiB under load: %s" % json.dumps(RESULTS, sort_keys=True))
    assert res_a["missing"] == 0 and res_b["missing"] == 0, (res_a, res_b)
    assert identical

    # the domain ran on B through the whole pre-copy: B never paused it
    # before the migration, and the pre-copy's disk passes happened then
    assert len(stop) == 1 and len(run) == 1 and stop[0] < run[0], RESULTS
    before = events[:stop[0]]
    assert [e["kind"] for e in before] == ["resync"] * len(precopy), RESULTS
    assert [e["details"][2] for e in before] == [p["mode"] for p in precopy], RESULTS
    # ... and wrote while they ran: the tracked passes after the first (and
    # the final delta) had the guest's writes to send (the load really ran)
    assert precopy[0]["mode"] == "checksum" and len(precopy) >= 2, RESULTS
    assert sum(p["bytes_sent"] for p in precopy[1:]) + final["bytes_sent"] > 0, RESULTS

    # while it could not run: one migration, ONE tracked delta, Remus, unpause
    during = events[stop[0]:run[0] + 1]
    assert [(e["host"], e["kind"]) + ((e["details"][2],) if e["kind"] == "resync" else ()) for e in during] \
        == DOWNTIME_EVENTS, RESULTS
    assert final["mode"] == "tracked" and final["bytes_sent"] < (1 << 30) // 64, RESULTS
    # the runner's reported bounds hold what the hosts saw (one clock: this machine's)
    t_migrate = res["timing"][machine.MIGRATE][0]
    assert t_migrate <= events[stop[0]]["t"] and res["downtime_max"] >= hosts_saw, RESULTS
    A.toolstack.destroy(name)
