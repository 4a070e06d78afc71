"""One Toolstack contract over every implementation of the port.

Pairs (each with a second host for migration):

* XendToolstack over XML-RPC on a Unix socket (httpu://) against
  tests/fakes/xend_server.py, which stands in for xend 4.1-4.4 (it cannot
  run without a hypervisor) and follows docs/xen-facts.md sections 1, 3, 4;
  Remus through tests/fakes/fake_remus.py standing in for tools/remus/remus.
* XlToolstack running the strict fake ``xl`` (tests/fakes/fake_xl.py, golden
  output in tests/data/xl/) as a real subprocess through SubprocessRunner;
  it stands in for xl 4.5-4.13.
* SimToolstack against two sim host processes (the simulator's agents).
* FakeToolstack over a FakeWorld (tests/fakes/fake_toolstack.py), the
  double the failback tests drive.

The tests taking ``pair`` hold for all four, optional capabilities
included; those taking ``real_pair`` check what only xend and xl have (the
golden data of their doubles: save images, sender PIDs, xl/xend formats).
The adapters are the real code; only xend/xl themselves are doubles.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import sys
import time

import itertools
import numbers

import pytest

from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, remus_config
from tests.fakes.xend_server import XendDouble, XendServer
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.model import DomainConfig, DomainInfo
from xen_remus_ext.ports import Toolstack, Tracker
from xen_remus_ext.toolstack.processes import RemusProcesses
from xen_remus_ext.toolstack.xend import XendToolstack
from xen_remus_ext.toolstack.xl import XlToolstack
from xen_remus_ext.wiring import SubprocessRunner

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")
XL_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "xl")
GUEST_DISK = ("tap2", "tap2:tapdisk:remus:10.0.0.2:9000|aio:/var/lib/xen/images/guest.img", "xvda", "w")


class Pair(object):
    """Host A's toolstack, host B's, and a way to read what the double saw.

    ``dom`` runs on A; ``dst`` is B's name for ``migrate`` and
    ``remus_start``; ``memory`` is ``dom``'s memory in MiB.
    """

    def __init__(self, kind, a, b, log, cleanup, dom="guest", dst="hostb", memory=512):
        self.kind = kind
        self.a = a
        self.b = b
        self.log = log
        self.cleanup = cleanup
        self.dom = dom
        self.dst = dst
        self.memory = memory

    def logged(self):
        if not os.path.exists(self.log):
            return []
        with open(self.log) as f:
            return [json.loads(line) for line in f]


def make_xend(tmp):
    short = os.path.join("/tmp", "xrx%d" % os.getpid())   # AF_UNIX paths are short
    if os.path.isdir(short):
        shutil.rmtree(short)
    os.makedirs(short)
    da, db = XendDouble("hosta"), XendDouble("hostb", free_memory=7000)
    da.add_domain("guest", disks=[GUEST_DISK], vifs=[("00:16:3e:5c:a1:01", "xenbr0")])
    da.add_peer("hostb", db)
    sa = XendServer(os.path.join(short, "a.sock"), da).start()
    sb = XendServer(os.path.join(short, "b.sock"), db).start()
    log = str(tmp / "remus.log")
    os.environ["FAKE_REMUS_LOG"] = log
    remus = [sys.executable, os.path.join(FAKES, "fake_remus.py")]
    a = XendToolstack(sa.uri, remus=remus, processes=RemusProcesses(str(tmp / "ra")), host="hosta")
    b = XendToolstack(sb.uri, remus=remus, processes=RemusProcesses(str(tmp / "rb")), host="hostb")

    def cleanup():
        for ts in (a, b):
            ts.remus_stop("guest")
        sa.stop()
        sb.stop()
        os.environ.pop("FAKE_REMUS_LOG", None)
        shutil.rmtree(short, ignore_errors=True)
    return Pair("xend", a, b, log, cleanup)


def make_xl(tmp):
    sa, sb = str(tmp / "a.json"), str(tmp / "b.json")
    with open(os.path.join(XL_DATA, "state.json")) as f:
        state = json.load(f)
    state["hosts"] = {"hostb": sb}
    with open(sa, "w") as f:
        json.dump(state, f)
    state_b = {"domains": [state["domains"][0]], "next_domid": 1, "hosts": {"hosta": sa}, "remus": {}}
    with open(sb, "w") as f:
        json.dump(state_b, f)
    log = str(tmp / "xl.log")

    def xl(state_path):
        return ["env", "FAKE_XL_STATE=%s" % state_path, "FAKE_XL_LOG=%s" % log,
                sys.executable, os.path.join(FAKES, "fake_xl.py")]
    a = XlToolstack(SubprocessRunner(), xl=xl(sa), processes=RemusProcesses(str(tmp / "ra")), host="hosta")
    b = XlToolstack(SubprocessRunner(), xl=xl(sb), processes=RemusProcesses(str(tmp / "rb")), host="hostb")

    def cleanup():
        for ts in (a, b):
            ts.remus_stop("guest")
    return Pair("xl", a, b, log, cleanup)


SIM_IMG = "/var/lib/xen/images/contract.img"
_SIM_NAMES = itertools.count(1)


@pytest.fixture(scope="module")
def sim_cluster(tmp_path_factory):
    from xen_remus_ext.sim.cluster import Cluster
    with Cluster(root=str(tmp_path_factory.mktemp("contract")), netns=False) as cl:
        for h in (cl["A"], cl["B"]):
            h.toolstack.disk_create(SIM_IMG, 1 << 20)
        yield cl


def make_sim(cluster):
    a, b = cluster["A"].toolstack, cluster["B"].toolstack
    name = "guest%d" % next(_SIM_NAMES)      # one cluster for the module: a new domain each test
    uname = "tap2:remus:%s:%d|aio:%s" % (cluster["B"].addr, cluster["B"].cfg["remus_port"], SIM_IMG)
    a.create({"name": name, "memory": 48, "disks": [{"uname": uname, "vdev": "xvda", "mode": "w"}]})

    def cleanup():
        for ts in (a, b):
            try:
                ts.remus_stop(name)
            except ToolstackError:
                pass
            try:
                ts.destroy(name)
            except ToolstackError:
                pass
    return Pair("sim", a, b, None, cleanup, dom=name, dst="B", memory=48)


def make_fake(tmp):
    world = FakeWorld(tmp / "world", hosts=("hosta", "hostb"))
    world.create("hosta", remus_config("guest", "hostb", memory=512))
    return Pair("fake", FakeToolstack(world, "hosta"), FakeToolstack(world, "hostb"), None, lambda: None)


@pytest.fixture(params=["xend", "xl", "sim", "fake"])
def pair(request, tmp_path):
    if request.param == "sim":
        p = make_sim(request.getfixturevalue("sim_cluster"))
    elif request.param == "fake":
        p = make_fake(tmp_path)
    else:
        p = (make_xend if request.param == "xend" else make_xl)(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture(params=["xend", "xl"])
def real_pair(request, tmp_path):
    p = (make_xend if request.param == "xend" else make_xl)(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


def names(ts):
    return sorted(d.name for d in ts.list_domains())


def test_list_domains(pair):
    doms = pair.a.list_domains()
    assert all(isinstance(d, DomainInfo) for d in doms)
    by_name = dict((d.name, d) for d in doms)
    assert by_name["Domain-0"].domid == 0
    assert by_name[pair.dom].memory == pair.memory and by_name[pair.dom].domid > 0
    assert not by_name[pair.dom].paused


def test_list_domains_names_the_host(real_pair):
    doms = real_pair.a.list_domains()
    by_name = dict((d.name, d) for d in doms)
    assert sorted(by_name) == ["Domain-0", "guest"]
    assert by_name["guest"].host == "hosta"


def test_domain_info_by_name_and_id(pair):
    info = pair.a.domain_info(pair.dom)
    assert info.name == pair.dom
    assert pair.a.domain_info(str(info.domid)).name == pair.dom
    with pytest.raises(ToolstackError) as err:
        pair.a.domain_info("nosuchdom")
    assert "nosuchdom" in str(err.value)


def test_domain_config_names_the_remus_disk(pair):
    cfg = pair.a.domain_config(pair.dom)
    assert isinstance(cfg, DomainConfig) and cfg.name == pair.dom and cfg.memory == pair.memory
    assert [(d.vdev, d.mode) for d in cfg.disks] == [("xvda", "w")]
    # xl names no replication target in a disk (DRBD, or memory-only Remus)
    assert [d.vdev for d in cfg.remus_disks] == ([] if pair.kind == "xl" else ["xvda"])


def test_domain_config(real_pair):
    pair = real_pair
    cfg = pair.a.domain_config("guest")
    assert isinstance(cfg, DomainConfig)
    assert (cfg.name, cfg.memory, cfg.vcpus, cfg.builder) == ("guest", 512, 1, "linux")
    assert cfg.kernel.startswith("/boot/vmlinuz")
    assert [(d.vdev, d.mode) for d in cfg.disks] == [("xvda", "w")]
    assert len(cfg.vifs) == 1 and "00:16:3e:5c:a1:01" in cfg.vifs[0]
    assert cfg.format == ("sxp" if pair.kind == "xend" else "xl")


def test_host_info(pair):
    info = pair.a.host_info()
    assert isinstance(info["free_memory"], int) and info["free_memory"] > 0
    assert info.get("xen_version")


def test_host_info_version(real_pair):
    assert real_pair.a.host_info()["xen_version"] in ("4.1.0", "4.5.0")


def test_pause_unpause(pair):
    pair.a.pause(pair.dom)
    assert pair.a.domain_info(pair.dom).paused
    pair.a.unpause(pair.dom)
    assert not pair.a.domain_info(pair.dom).paused


def test_save_restore(real_pair, tmp_path):
    pair = real_pair
    img = str(tmp_path / "guest.save")
    old = pair.a.domain_info("guest").domid
    pair.a.save("guest", img)
    assert os.path.getsize(img) > 0
    assert names(pair.a) == ["Domain-0"]
    pair.a.restore(img, paused=True)
    info = pair.a.domain_info("guest")
    assert info.paused and info.domid != old
    assert pair.a.domain_config("guest").memory == 512


def test_save_checkpoint_keeps_domain(real_pair, tmp_path):
    real_pair.a.save("guest", str(tmp_path / "ckpt"), checkpoint=True)
    assert names(real_pair.a) == ["Domain-0", "guest"]


def test_migrate_moves_the_domain(pair):
    pair.a.migrate(pair.dom, pair.dst)
    assert pair.dom not in names(pair.a)
    assert pair.dom in names(pair.b)
    assert not pair.b.domain_info(pair.dom).paused


def test_migrate_to_unknown_host_fails_and_keeps_domain(pair):
    with pytest.raises(ToolstackError) as err:
        pair.a.migrate(pair.dom, "nowhere")
    assert "nowhere" in str(err.value) or "connect" in str(err.value)
    assert pair.dom in names(pair.a) and not pair.a.domain_info(pair.dom).paused


def test_destroy(pair):
    pair.a.destroy(pair.dom)
    assert pair.dom not in names(pair.a)
    with pytest.raises(ToolstackError):
        pair.a.destroy(pair.dom)


def test_remus_start_running_stop(pair):
    assert not pair.a.remus_running(pair.dom)
    pair.a.remus_start(pair.dom, pair.dst, interval_ms=100)
    deadline = time.time() + 10
    while not pair.a.remus_running(pair.dom) and time.time() < deadline:
        time.sleep(0.05)
    assert pair.a.remus_running(pair.dom)
    pair.a.remus_stop(pair.dom)
    deadline = time.time() + 10
    while pair.a.remus_running(pair.dom) and time.time() < deadline:
        time.sleep(0.05)
    assert not pair.a.remus_running(pair.dom)


# -- optional capabilities: each implementation has them, or the port's no-op default


def test_is_a_port_toolstack(pair):
    assert isinstance(pair.a, Toolstack) and pair.a.kind in ("xend", "xl", "sim")
    assert isinstance(pair.a.migrates_paused, bool)


def test_migrate_paused_as_declared(pair):
    lacks = pair.a.check_migrate_paused()
    assert lacks is None or isinstance(lacks, str)
    if not pair.a.migrates_paused:
        with pytest.raises(ToolstackError):
            pair.a.migrate(pair.dom, pair.dst, paused=True)
        assert pair.dom in names(pair.a)
        return
    pair.a.migrate(pair.dom, pair.dst, paused=True)
    deadline = time.time() + 10
    while pair.dom in names(pair.a) and time.time() < deadline:
        time.sleep(0.05)
    assert pair.dom not in names(pair.a)
    assert pair.b.domain_info(pair.dom).paused          # paused on arrival, as declared
    pair.b.unpause(pair.dom)
    assert not pair.b.domain_info(pair.dom).paused


def test_migration_downtime_is_none_or_seconds(pair):
    got = pair.a.migration_downtime()
    assert got is None or (isinstance(got, numbers.Real) and got >= 0)


def test_disk_path_is_none_or_a_local_file(pair):
    path = pair.a.domain_config(pair.dom).disks[0].path
    got = pair.a.disk_path(path)
    assert got is None or (os.path.isabs(got) and got != path)


def test_tracker_as_declared(pair):
    kind, why = pair.a.tracker_choice(pair.dom, "xvda")
    assert isinstance(why, str) and why
    tr = pair.a.tracker_for(pair.dom, "xvda")
    if kind is None or not pair.a.tracks_writes():
        assert tr is None
        return
    assert isinstance(tr, Tracker) and tr.name
    assert kind in (tr.name, "available")
    tr.mark()
    assert tr.trustworthy() in (True, False)
    assert list(tr.dirty_extents()) == sorted(tr.dirty_extents())


def test_retarget_as_declared(pair):
    lacks = pair.a.check_retarget()
    cfg = pair.a.domain_config(pair.dom)
    if lacks is not None:
        assert isinstance(lacks, str) and lacks
        with pytest.raises(ToolstackError):
            pair.a.retarget_disks(pair.dom, cfg)
        return
    # able: re-pointing a paused domain at the target it already has changes nothing
    pair.a.pause(pair.dom)
    pair.a.retarget_disks(pair.dom, cfg)
    assert [d.uname for d in pair.a.domain_config(pair.dom).remus_disks] == \
        [d.uname for d in cfg.remus_disks]


def test_hold_as_declared(pair):
    """A backup that holds its copy when the stream breaks: asked per stream
    (``remus_start(hold=True)``) and, on the backup, by ``hold_on_stream_break``;
    ``remus_takeover`` only of a copy whose stream broke."""
    lacks = pair.a.check_hold()
    if lacks is not None:
        assert isinstance(lacks, str) and lacks
        with pytest.raises(ToolstackError):
            pair.a.remus_start(pair.dom, pair.dst, interval_ms=100, hold=True)
        assert not pair.a.remus_running(pair.dom)
        with pytest.raises(ToolstackError):
            pair.b.hold_on_stream_break(True)
        with pytest.raises(ToolstackError):
            pair.b.remus_takeover(pair.dom)
        return
    pair.b.hold_on_stream_break(True)
    pair.a.remus_start(pair.dom, pair.dst, interval_ms=100, hold=True)
    deadline = time.time() + 10
    while not pair.a.remus_running(pair.dom) and time.time() < deadline:
        time.sleep(0.05)
    assert pair.a.remus_running(pair.dom)
    with pytest.raises(ToolstackError):           # the stream still flows: nothing to take over
        pair.b.remus_takeover(pair.dom)
    assert pair.a.remus_running(pair.dom)
    pair.a.remus_stop(pair.dom)


def test_a_running_domain_is_no_remus_backup(pair):
    assert pair.a.remus_backup(pair.dom) is None


def test_remus_start_stop(real_pair):
    pair = real_pair
    assert not pair.a.remus_running("guest")
    pid = pair.a.remus_start("guest", "hostb", interval_ms=100, net=False)
    assert pid > 0 and pair.a.remus_running("guest")
    with pytest.raises(ToolstackError):
        pair.a.remus_start("guest", "hostb")
    # a later process (fresh adapter, same state dir) still finds and stops it
    fresh = type(pair.a).__new__(type(pair.a))
    fresh.__dict__.update(pair.a.__dict__)
    fresh.processes = RemusProcesses(pair.a.processes.directory)
    assert fresh.remus_running("guest")
    assert fresh.remus_stop("guest") is True
    deadline = time.time() + 5
    while pair.a.remus_running("guest") and time.time() < deadline:
        time.sleep(0.05)
    assert not pair.a.remus_running("guest")
    assert fresh.remus_stop("guest") is False
    sent = [a for a in pair.logged() if "remus" in a or a[-2:] == ["guest", "hostb"]]
    assert sent, pair.logged()


def test_remus_of_unknown_domain_fails_at_start(pair):
    with pytest.raises(ToolstackError) as err:
        pair.a.remus_start("nosuchdom", pair.dst)
    assert "nosuchdom" in str(err.value)
    assert not pair.a.remus_running("nosuchdom")
