"""Two simulated hosts with a failed-over domain: the world of the failback scenarios.

Stands in for: two Xen hosts with Remus (docs/xen-facts.md sections 4 and 5 are
what the simulator follows).
"""
from __future__ import absolute_import, division, print_function

import contextlib
import os

import pytest

from xen_remus_ext.sim.cluster import Cluster
from xen_remus_ext.sim.cluster import wait_for as _wait  # noqa: F401 (the scenarios' wait)


@contextlib.contextmanager
def shared_state_cluster(root, netns=None):
    """A :class:`Cluster` under ``root`` whose hosts and this process share
    one state dir (generations are kept beside each host's own file), as the
    demo does; ``cl.state_dir`` names it.  The process's own setting comes
    back at the end."""
    saved = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = os.path.join(root, "state")
    try:
        with Cluster(root=os.path.join(root, "hosts"), netns=netns) as cl:
            cl.state_dir = os.environ["XEN_REMUS_STATE_DIR"]
            yield cl
    finally:
        if saved is None:
            os.environ.pop("XEN_REMUS_STATE_DIR", None)
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = saved


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with shared_state_cluster(str(tmp_path_factory.mktemp("fbsim"))) as cl:
        yield cl


@pytest.fixture(autouse=True)
def _shared_state(cluster, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", cluster.state_dir)


def failed_over(cluster, name, size, rate, batch=1, run_s=0.4, after_s=0.3):
    """A domain protected A -> B, A powered off, B took over, A back (stale)."""
    image = cluster.failed_over(name, size, {"rate": rate, "batch": batch, "seed": 77}, run_s=run_s,
                                after_s=after_s)
    return cluster["A"], cluster["B"], image


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
