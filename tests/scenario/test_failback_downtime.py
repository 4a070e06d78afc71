"""Downtime of ``failback`` for a 1 GiB disk under a 10 MB/s write load (simulator).

The guest is asked to write 4 KiB of checksummed records 3000 times a second
(12.3 MB/s; on a quiet machine it sustains 10-12 MB/s, on an oversubscribed
one less, and the test insists on at least 8 MB/s so that it never passes
without load) while the failback pre-copies, migrates (paused on arrival, as ``xl migrate -p``),
sends the final tracked delta, restarts Remus and unpauses.  Downtime is
measured two ways: the longest silence of the guest's acknowledgements (what
the outside world sees) and the runner's pause -> unpause span.

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


@pytest.mark.slow
def test_downtime_1gib_disk_under_10mbps_write_load(cluster):  # noqa: F811
    """1 GiB disk, the guest writing 4 KiB of records 3000 times a second."""
    name = "fb3"
    A, B, image = failed_over(cluster, name, 1 << 30, rate=3000, batch=8, run_s=0.5, after_s=1.0)
    t_home, n_home = time.time(), cluster.observer.acked(name)
    res = api.run_failback(B.toolstack, name, "A", peer_toolstack=A.toolstack,
                           options={"local_host": "B", "interval_ms": 50},
                           disk_sync=SimDiskSync([A.toolstack, B.toolstack]))
    assert res["state"] == machine.DONE
    failback_s = time.time() - t_home
    _wait(lambda: cluster.observer.acked(name) > 0, 5.0, "output from A")
    time.sleep(0.3)
    silence = cluster.observer.silence(name, t_home, time.time())
    # the guest's write rate while it ran (records are 512 bytes; the
    # failback's own silence is not the guest's fault)
    load = (cluster.observer.acked(name) - n_home) * 512 / (time.time() - t_home - silence)
    acked, res_a, res_b, identical = judge(cluster, A, B, name, image)
    RESULTS.update(load_bytes_per_s=round(load), guest_silence_s=round(silence, 3),
                   downtime_s=round(res["downtime"], 3), downtime_max_s=round(res["downtime_max"], 3),
                   final_delta_bytes=res["disks"][0]["final"]["bytes_sent"],
                   final_delta_mode=res["disks"][0]["final"]["mode"],
                   precopy=[(p["mode"], p["bytes_sent"], p["seconds"]) for p in res["disks"][0]["precopy"]],
                   failback_s=round(failback_s, 2), acked=acked)
    print("failback 1 GiB under load: %s" % json.dumps(RESULTS, sort_keys=True))
    assert load > 8.0e6, RESULTS                    # the load really ran (about 10 MB/s and more)
    assert res_a["missing"] == 0 and res_b["missing"] == 0, (res_a, res_b)
    assert identical
    assert res["disks"][0]["final"]["mode"] == "tracked"
    assert silence < 1.0, RESULTS
    assert res["downtime_max"] < 1.0, RESULTS
    A.toolstack.destroy(name)
