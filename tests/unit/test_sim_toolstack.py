"""SimToolstack against real sim host processes (127.0.0.1, no namespaces).

Checks the port's behaviour on the simulated dom0: domain listing and
config, pause really stops the guest's writes, xend's xenstore keys (read
back with real pyxs from the host's xenstored double), save/restore, memory-
only migration, the sim's dirty tracker, and errors that name the object.

Stands in for: xend on a Xen host (docs/xen-facts.md sections 1, 4 and 7).
"""
from __future__ import absolute_import, division, print_function

import os
import time

import pyxs
import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.model import Extent
from xen_remus_ext.sim import workload
from xen_remus_ext.sim.cluster import Cluster

IMG = "/var/lib/xen/images/t.img"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with Cluster(root=str(tmp_path_factory.mktemp("simts")), netns=False) as cl:
        for h in (cl["A"], cl["B"]):
            h.toolstack.disk_create(IMG, 1 << 20)
        yield cl


def _config(cl, name, rate=200, seed=3):
    uname = "tap2:remus:%s:%d|aio:%s" % (cl["B"].addr, cl["B"].cfg["remus_port"], IMG)
    return {"name": name, "memory": 48, "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}],
            "workload": {"rate": rate, "seed": seed, "observer": cl.observer.path}}


def _next(ts, name):
    return ts.sim_info(name)["next"]


def test_create_list_config_and_xenstore_keys(cluster):
    ts = cluster["A"].toolstack
    domid = ts.create(_config(cluster, "k1"), paused=True)
    try:
        names = dict((d.name, d) for d in ts.list_domains())
        assert names["Domain-0"].domid == 0
        assert names["k1"].domid == domid and names["k1"].paused
        cfg = ts.domain_config("k1")
        assert cfg.memory == 48 and cfg.remus_disks[0].remus.port == cluster["B"].cfg["remus_port"]
        assert cfg.remus_disks[0].path == IMG
        with pyxs.Client(unix_socket_path=cluster["A"].cfg["xenstored"]) as c:
            base = ("/local/domain/%d" % domid).encode()
            assert c.read(base + b"/name") == b"k1"
            vm = c.read(base + b"/vm")
            assert c.read(vm + b"/name") == b"k1"
            be = ("/local/domain/0/backend/vbd/%d/51712" % domid).encode()
            assert c.read(be + b"/tapdisk-params").startswith(b"remus:")
            assert c.read(base + b"/device/vbd/51712/backend") == be
    finally:
        ts.destroy("k1")
    with pyxs.Client(unix_socket_path=cluster["A"].cfg["xenstored"]) as c:
        assert not c.exists(("/local/domain/%d" % domid).encode())


def test_pause_stops_writes_and_unpause_resumes(cluster):
    ts = cluster["A"].toolstack
    ts.create(_config(cluster, "p1", rate=400))
    try:
        time.sleep(0.15)
        ts.pause("p1")
        n = _next(ts, "p1")
        assert n > 0
        time.sleep(0.15)
        assert _next(ts, "p1") == n
        ts.unpause("p1")
        time.sleep(0.15)
        assert _next(ts, "p1") > n
    finally:
        ts.destroy("p1")


def test_unknown_domain_error_names_it(cluster):
    with pytest.raises(ToolstackError) as exc:
        cluster["A"].toolstack.pause("nosuch")
    assert "nosuch" in str(exc.value) and "host A" in str(exc.value)


def test_save_restore_keeps_memory_state(cluster):
    ts = cluster["A"].toolstack
    ts.create(_config(cluster, "s1", rate=300))
    time.sleep(0.1)
    ts.pause("s1")
    n = _next(ts, "s1")
    ts.save("s1", "/var/lib/xen/s1.save")
    assert "s1" not in [d.name for d in ts.list_domains()]
    with open(os.path.join(cluster["A"].cfg["root"], "var/lib/xen/s1.save"), "rb") as f:
        assert f.read(16) == b"LinuxGuestRecord"
    ts.restore("/var/lib/xen/s1.save", paused=True)
    try:
        assert _next(ts, "s1") == n
    finally:
        ts.destroy("s1")


def test_migrate_moves_memory_only(cluster):
    """The destination resumes the domain on its OWN disk (the seed's bug)."""
    A, B = cluster["A"].toolstack, cluster["B"].toolstack
    A.create(_config(cluster, "m1", rate=300, seed=77))
    time.sleep(0.2)
    A.pause("m1")
    n = _next(A, "m1")
    A.migrate("m1", "B", live=True, paused=True)
    assert "m1" not in [d.name for d in A.list_domains()]
    assert B.domain_info("m1").paused and _next(B, "m1") == n
    # the records are on A's copy only; B's copy never saw them
    assert A.disk_check(IMG, 77, n)["missing"] == 0
    assert B.disk_check(IMG, 77, n)["missing"] == n
    B.destroy("m1")


def test_sim_tracker_records_writes_since_mark(cluster):
    ts = cluster["A"].toolstack
    ts.create(_config(cluster, "t1", rate=300, seed=5), paused=True)
    try:
        tr = ts.tracker_for("t1", "xvda")
        assert not tr.trustworthy()          # nothing marked yet
        tr.mark()
        assert tr.trustworthy() and tr.dirty_extents() == []
        start = _next(ts, "t1")
        ts.unpause("t1")
        time.sleep(0.1)
        ts.pause("t1")
        end = _next(ts, "t1")
        slots = workload.slots_for(1 << 20)
        got = tr.dirty_extents()
        first = workload.offset_of(start, slots) // 4096 * 4096
        last = workload.offset_of(end - 1, slots)
        assert got == [Extent(first, (last // 4096 + 1) * 4096 - first)]
        tr.clear()
        assert tr.dirty_extents() == []
    finally:
        ts.destroy("t1")


def test_restarted_host_forgets_its_trackers(cluster):
    ts = cluster["B"].toolstack
    ts.create(_config(cluster, "r1"), paused=True)
    tr = ts.tracker_for("r1", "xvda")
    tr.mark()
    cluster["B"].kill()
    cluster["B"].start()
    assert not tr.trustworthy()
    with pytest.raises(ToolstackError):
        tr.dirty_extents()
