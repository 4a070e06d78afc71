"""Scenario a (toolstack half): the Toolstack contract of
tests/adapter/test_contract_toolstack.py held by XlToolstack against the
real ``xl`` of Xen 4.17 in dom0, with the peer host's xl (over ssh) as host B.

The contract's checks, in the order a live domain allows (the doubles let
every test start from a fresh state; here one small PV domain, ``ctest``,
goes through all of them and ends migrated to the peer and destroyed
there).  Expected values are the real guest's (96 MiB, Xen 4.17) instead of
the doubles' golden data.
"""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import time

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.model import DomainConfig, DomainInfo
from xen_remus_ext.toolstack.processes import RemusProcesses
from xen_remus_ext.toolstack.xl import XlToolstack
from xen_remus_ext.wiring import SubprocessRunner

ME = os.environ.get("XRL_ME", "hosta")
PEER = os.environ.get("XRL_PEER", "hostb")
CFG = os.environ.get("XRL_CTEST_CFG", "/etc/xen/ctest.cfg")
DOM = "ctest"
MEM = 96
DISK = os.path.join(os.environ.get("XRL_DISKS", "/var/lib/xrl/xfs"), "ctest.img")


@pytest.fixture(scope="module")
def pair():
    a = XlToolstack(SubprocessRunner(), host=ME, processes=RemusProcesses("/tmp/xrl-remus-a"), memory_only=True)
    b = XlToolstack(SubprocessRunner(), xl=["ssh", PEER, "xl"], host=PEER)
    if DOM not in names(a):
        booted(DOM, create())
    yield a, b
    for ts in (a, b):
        try:
            ts.destroy(DOM)
        except ToolstackError:
            pass


def console_log(dom):
    return "/var/log/xen/console/guest-%s.log" % dom


def create():
    """``xl create`` ctest; :returns: where its console log ends before (for :func:`booted`)."""
    log = console_log(DOM)
    start = os.path.getsize(log) if os.path.exists(log) else 0
    proc = subprocess.Popen(["xl", "create", CFG], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.communicate()[0].decode("utf-8", "replace")
    if proc.returncode != 0:
        pytest.fail("xl create %s: exit %d: %s" % (CFG, proc.returncode, out[-1500:]))
    return start


def booted(dom, start=0, timeout=120):
    """Wait until the guest's console shows its workload running (after byte ``start`` of its log)."""
    log = console_log(dom)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(log):
            with open(log, "rb") as f:
                f.seek(start)
                if b"XRL-GUEST rec" in f.read():
                    return
        time.sleep(1)
    pytest.fail("%s: no workload output on its console in %d s" % (dom, timeout))


def names(ts):
    return sorted(d.name for d in ts.list_domains())


def test_list_domains(pair):
    a, _ = pair
    doms = a.list_domains()
    assert all(isinstance(d, DomainInfo) for d in doms)
    by_name = dict((d.name, d) for d in doms)
    assert sorted(by_name) == ["Domain-0", DOM]
    assert by_name["Domain-0"].domid == 0
    assert by_name[DOM].memory == MEM and by_name[DOM].domid > 0
    assert by_name[DOM].host == ME
    assert not by_name[DOM].paused


def test_domain_info_by_name_and_id(pair):
    a, _ = pair
    info = a.domain_info(DOM)
    assert info.name == DOM
    assert a.domain_info(str(info.domid)).name == DOM
    with pytest.raises(ToolstackError) as err:
        a.domain_info("nosuchdom")
    assert "nosuchdom" in str(err.value)


def test_domain_config(pair):
    a, _ = pair
    cfg = a.domain_config(DOM)
    assert isinstance(cfg, DomainConfig)
    assert (cfg.name, cfg.memory, cfg.vcpus, cfg.builder) == (DOM, MEM, 1, "linux")
    assert cfg.kernel == "/opt/xrl/guest-vmlinuz"
    assert [(d.vdev, d.mode) for d in cfg.disks] == [("xvda", "w")]
    assert cfg.format == "xl"
    # memory-only Remus: the writable disk is the one failback resyncs
    assert [(d.vdev, d.path) for d in cfg.remus_disks] == [("xvda", DISK)]


def test_host_info(pair):
    a, b = pair
    for ts in (a, b):
        info = ts.host_info()
        assert isinstance(info["free_memory"], int) and info["free_memory"] > MEM
        assert str(info["xen_version"]).startswith("4.17")


def test_pause_unpause(pair):
    a, _ = pair
    a.pause(DOM)
    assert a.domain_info(DOM).paused
    a.unpause(DOM)
    assert not a.domain_info(DOM).paused


def test_save_restore(pair, tmp_path):
    a, _ = pair
    img = str(tmp_path / "ctest.save")
    old = a.domain_info(DOM).domid
    a.save(DOM, img)
    assert os.path.getsize(img) > 0
    assert names(a) == ["Domain-0"]
    a.restore(img, paused=True)
    info = a.domain_info(DOM)
    assert info.paused and info.domid != old
    assert a.domain_config(DOM).memory == MEM
    a.unpause(DOM)
    assert not a.domain_info(DOM).paused


def test_save_checkpoint_keeps_domain(pair, tmp_path):
    a, _ = pair
    a.save(DOM, str(tmp_path / "ckpt"), checkpoint=True)
    assert names(a) == ["Domain-0", DOM]


def test_remus_of_unknown_domain_fails_at_start(pair):
    a, _ = pair
    with pytest.raises(ToolstackError) as err:
        a.remus_start("nosuchdom", PEER, net=False, disk=False)
    assert "nosuchdom" in str(err.value)
    assert not a.remus_running("nosuchdom")


def test_migrate_to_unknown_host_fails_and_keeps_domain(pair):
    a, _ = pair
    with pytest.raises(ToolstackError):
        a.migrate(DOM, "nowhere.invalid")
    assert names(a) == ["Domain-0", DOM]
    assert not a.domain_info(DOM).paused


def test_migrate_moves_the_domain(pair):
    a, b = pair
    a.migrate(DOM, PEER)
    assert names(a) == ["Domain-0"]
    assert names(b) == ["Domain-0", DOM]
    assert not b.domain_info(DOM).paused


def test_destroy_on_peer(pair):
    _, b = pair
    b.destroy(DOM)
    assert names(b) == ["Domain-0"]
    with pytest.raises(ToolstackError):
        b.destroy(DOM)


def test_remus_start_stop(pair):
    """A real ``xl remus -b`` (blackhole: checkpoints go nowhere) on a fresh
    domain: started, found by a later adapter, stopped by SIGINT."""
    a, _ = pair
    start = create()
    try:
        booted(DOM, start)   # before the guest kernel has its p2m list, a save fails ("Bad mfn 0 for p2m frame list")
        assert not a.remus_running(DOM)
        pid = a.remus_start(DOM, PEER, interval_ms=200, net=False, disk=False, blackhole=True)
        time.sleep(3)
        assert pid > 0 and a.remus_running(DOM), "xl remus -b exited: %s" % a.processes.tail(DOM)
        with pytest.raises(ToolstackError):
            a.remus_start(DOM, PEER, net=False, disk=False, blackhole=True)
        time.sleep(2)
        fresh = XlToolstack(SubprocessRunner(), host=ME, processes=RemusProcesses(a.processes.directory))
        assert fresh.remus_running(DOM), "xl remus -b exited: %s" % a.processes.tail(DOM)
        assert fresh.remus_stop(DOM) is True
        assert not a.remus_running(DOM)
        assert fresh.remus_stop(DOM) is False
        assert DOM in names(a)
    finally:
        a.destroy(DOM)
