"""Two simulated hosts with a failed-over domain: the world of the failback scenarios.

Stands in for: two Xen hosts with Remus (docs/xen-facts.md sections 4 and 5 are
what the simulator follows).
"""
from __future__ import absolute_import, division, print_function

import os
import time

import pytest

from xen_remus_ext.sim.cluster import Cluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The hosts and this process share one state dir (generations are kept
    beside each host's own file), as the demo does."""
    root = str(tmp_path_factory.mktemp("fbsim"))
    saved = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(root, "state")
    try:
        with Cluster(root=os.path.join(root, "hosts")) as cl:
            cl.state_dir = os.environ["XEN_REMUS_STATE_DIR"]
            yield cl
    finally:
        if saved is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved


@pytest.fixture(autouse=True)
def _shared_state(cluster, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", cluster.state_dir)


def _wait(pred, timeout, what):
    deadline = time.time() + timeout
    while True:
        got = pred()
        if got:
            return got
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.01)


def failed_over(cluster, name, size, rate, batch=1, run_s=0.4, after_s=0.3):
    """A domain protected A -> B, A powered off, B took over, A back (stale)."""
    from xen_remus_ext.resync import meta
    A, B = cluster["A"], cluster["B"]
    if not A.alive() or A.frozen:
        A.start()
    image = "/var/lib/xen/images/%s.img" % name
    for h in (A, B):
        h.toolstack.disk_create(image, size)
    m = meta.ensure(A.disk_path(image), size, role="primary")
    meta.mark_synced(B.disk_path(image), m, role="backup")
    uname = "tap2:remus:%s:%d|aio:%s" % (B.addr, B.cfg["remus_port"], image)
    A.toolstack.create({"name": name, "memory": 32,
                        "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
                        "workload": {"rate": rate, "batch": batch, "seed": 77,
                                     "observer": cluster.observer.path}}, paused=True)
    A.toolstack.remus_start(name, "B", interval_ms=50)
    A.toolstack.unpause(name)
    time.sleep(run_s)
    A.kill(power_off=True)
    _wait(lambda: B.toolstack.sim_info(name)["sim_state"] == "running", 5.0, "failover on B")
    A.start()
    time.sleep(after_s)
    return A, B, image


def judge(cluster, A, B, name, image):
    """Pause the domain on A after a few committed checkpoints; every
    acknowledged record must be on both copies, and the copies identical."""
    first = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= first + 3, 5.0, "checkpoints")
    A.toolstack.pause(name)
    c = A.toolstack.sim_info(name)["remus"]["commits"]
    _wait(lambda: A.toolstack.sim_info(name)["remus"]["commits"] >= c + 1, 5.0, "a last checkpoint")
    acked = cluster.observer.acked(name)
    res_a = A.toolstack.disk_check(image, 77, acked)
    res_b = B.toolstack.disk_check(image, 77, acked)
    return acked, res_a, res_b, A.toolstack.disk_digest(image) == B.toolstack.disk_digest(image)
