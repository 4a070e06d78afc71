"""One Toolstack contract over each real adapter and the double it is held to.

Pairs (each with a second host "hostb" for migration):

* XendToolstack over XML-RPC on a Unix socket (httpu://) against
  tests/fakes/xend_server.py, which stands in for xend 4.1-4.4 (it cannot
  run without a hypervisor) and follows xen-facts.md sections 1, 3, 4;
  Remus through tests/fakes/fake_remus.py standing in for tools/remus/remus.
* XlToolstack running the strict fake ``xl`` (tests/fakes/fake_xl.py, golden
  output in tests/data/xl/) as a real subprocess through SubprocessRunner;
  it stands in for xl 4.5-4.13.

The adapters are the real code; only xend/xl themselves are doubles.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import sys
import time

import pytest

from tests.fakes.xend_server import XendDouble, XendServer
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.model import DomainConfig, DomainInfo
from xen_remus_ext.toolstack.processes import RemusProcesses
from xen_remus_ext.toolstack.xend import XendToolstack
from xen_remus_ext.toolstack.xl import XlToolstack
from xen_remus_ext.wiring import SubprocessRunner

FAKES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fakes")
XL_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "xl")
GUEST_DISK = ("tap2", "tap2:tapdisk:remus:10.0.0.2:9000|aio:/var/lib/xen/images/guest.img", "xvda", "w")


class Pair(object):
    """Host A's toolstack, host B's, and a way to read what the double saw."""

    def __init__(self, kind, a, b, log, cleanup):
        self.kind = kind
        self.a = a
        self.b = b
        self.log = log
        self.cleanup = cleanup

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


@pytest.fixture(params=["xend", "xl"])
def pair(request, tmp_path):
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
    assert sorted(by_name) == ["Domain-0", "guest"]
    assert by_name["Domain-0"].domid == 0
    assert by_name["guest"].memory == 512 and by_name["guest"].domid > 0
    assert by_name["guest"].host == "hosta"
    assert not by_name["guest"].paused


def test_domain_info_by_name_and_id(pair):
    info = pair.a.domain_info("guest")
    assert info.name == "guest"
    assert pair.a.domain_info(str(info.domid)).name == "guest"
    with pytest.raises(ToolstackError) as err:
        pair.a.domain_info("nosuchdom")
    assert "nosuchdom" in str(err.value)


def test_domain_config(pair):
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
    assert info["xen_version"] in ("4.1.0", "4.5.0")


def test_pause_unpause(pair):
    pair.a.pause("guest")
    assert pair.a.domain_info("guest").paused
    pair.a.unpause("guest")
    assert not pair.a.domain_info("guest").paused


def test_save_restore(pair, tmp_path):
    img = str(tmp_path / "guest.save")
    old = pair.a.domain_info("guest").domid
    pair.a.save("guest", img)
    assert os.path.getsize(img) > 0
    assert names(pair.a) == ["Domain-0"]
    pair.a.restore(img, paused=True)
    info = pair.a.domain_info("guest")
    assert info.paused and info.domid != old
    assert pair.a.domain_config("guest").memory == 512


def test_save_checkpoint_keeps_domain(pair, tmp_path):
    pair.a.save("guest", str(tmp_path / "ckpt"), checkpoint=True)
    assert names(pair.a) == ["Domain-0", "guest"]


def test_migrate_moves_the_domain(pair):
    pair.a.migrate("guest", "hostb")
    assert names(pair.a) == ["Domain-0"]
    assert names(pair.b) == ["Domain-0", "guest"]
    assert not pair.b.domain_info("guest").paused


def test_migrate_to_unknown_host_fails_and_keeps_domain(pair):
    with pytest.raises(ToolstackError) as err:
        pair.a.migrate("guest", "nowhere")
    assert "nowhere" in str(err.value) or "connect" in str(err.value)
    assert names(pair.a) == ["Domain-0", "guest"]


def test_destroy(pair):
    pair.a.destroy("guest")
    assert names(pair.a) == ["Domain-0"]
    with pytest.raises(ToolstackError):
        pair.a.destroy("guest")


def test_remus_start_stop(pair):
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
        pair.a.remus_start("nosuchdom", "hostb")
    assert "nosuchdom" in str(err.value)
    assert not pair.a.remus_running("nosuchdom")
