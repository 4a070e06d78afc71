"""XendToolstack.retarget_disks: re-pointing a paused domain's blktap2 remus
disks with ``tap-ctl pause``/``unpause -a`` (Xen 4.1.0 tap-ctl.c), checked
against a strict fake tap-ctl, the xend double over TCP and an in-memory
xenstore holding the vbd backends xend writes (docs/xen-facts.md section 7).

Stands in for: xend 4.1 with blktap2 tapdisks serving a domain's disks.
"""
from __future__ import absolute_import, division, print_function

import io
import os

import pytest

from tests.fakes.fake_tapctl import FakeTapCtl
from tests.fakes.fake_xenstore import FakeXenStore
from tests.fakes.xend_server import XendDouble, XendServer
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.failback import preflight
from xen_remus_ext.toolstack import tapctl
from xen_remus_ext.toolstack.xend import XendToolstack

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "tapctl")
IMG = "/var/lib/xen/images/guest.img"
OLD = "remus:192.0.2.1:9000|aio:" + IMG
NEW = "remus:hostb:9000|aio:" + IMG
GOLDEN_VBDS = [{"pid": 2841, "minor": 0, "stack": "aio:/var/lib/xen/images/other.img"},
               {"pid": 2903, "minor": 2, "stack": "remus:192.0.2.1:9000|aio:/var/lib/xen/images/g2.img"},
               {"pid": 3011, "minor": 3, "stack": "aio:/x.img", "state": 0x22},
               {"pid": None, "minor": 4, "stack": None}]


def golden(name):
    with io.open(os.path.join(DATA, name), encoding="ascii") as f:
        return f.read()


class World(object):
    """xend with a paused ``guest`` (remus disk xvda on tapdev2, plain aio
    disk xvdb on tapdev1), its vbd backends in xenstore, and its tapdisks."""

    def __init__(self, paused=True, tparams=OLD, running=OLD):
        self.xend = XendDouble("hosta")
        self.dom = self.xend.add_domain("guest", paused=paused, disks=[
            ("tap2", "tap:" + tparams, "xvda", "w"), ("tap2", "tap:aio:/var/lib/xen/images/data.img", "xvdb", "w")])
        self.server = XendServer(("127.0.0.1", 0), self.xend).start()
        self.xs = FakeXenStore()
        be = "/local/domain/0/backend/vbd/%d" % self.dom.domid
        for devid, dev, minor, params in ((51712, "xvda", 2, tparams), (51728, "xvdb", 1, "aio:/var/lib/xen/"
                                                                                       "images/data.img")):
            for key, value in (("dev", dev), ("type", "phy"), ("params", "/dev/xen/blktap-2/tapdev%d" % minor),
                               ("mode", "w"), ("tapdisk-params", params), ("state", "4")):
                self.xs.write("%s/%d/%s" % (be, devid, key), value)
        self.xvda = "%s/51712" % be
        self.tap = FakeTapCtl([{"pid": 2841, "minor": 1, "stack": "aio:/var/lib/xen/images/data.img"},
                               {"pid": 2903, "minor": 2, "stack": running}])
        self.ts = XendToolstack(self.server.uri, processes=object(), runner=self.tap, xenstore=self.xs)

    def toward_b(self):
        cfg, changed = preflight.plan_direction(self.ts.domain_config("guest"), "hostb")
        assert changed == ["xvda"]
        return cfg

    def xend_rereads_xenstore(self):
        """xend reports a tap2 disk's uname as 'tap:' + tapdisk-params."""
        self.dom.disks[0] = ("tap2", "tap:" + self.xs.read(self.xvda + "/tapdisk-params"), "xvda", "w")

    def vbd(self, minor):
        return [v for v in self.tap.vbds if v["minor"] == minor][0]


@pytest.fixture
def world():
    w = World()
    yield w
    w.server.stop()


def test_golden_list_both_formats_and_the_fake_renders_them():
    fake = FakeTapCtl(GOLDEN_VBDS)
    assert fake.render_list() == golden("list.txt")
    assert fake.render_list(tty=True) == golden("list-tty.txt")
    for name in ("list.txt", "list-tty.txt"):
        got = tapctl.parse_list(golden(name))
        assert [(e.pid, e.minor, e.state, e.args, e.paused) for e in got] == [
            (2841, 0, 0, "aio:/var/lib/xen/images/other.img", False),
            (2903, 2, 0, "remus:192.0.2.1:9000", False),
            (3011, 3, 0x22, None, True),
            (None, 4, None, None, False)], name
    with pytest.raises(ToolstackError):
        tapctl.parse_list("pid=1 minor=x\n")
    with pytest.raises(ToolstackError):
        tapctl.parse_list("pid=1 color=red\n")


def test_stacks_of_tap2_unames():
    assert tapctl.tapdisk_stack("tap2:remus:h:9000|aio:/x") == "remus:h:9000|aio:/x"
    assert tapctl.tapdisk_stack("tap:tapdisk:remus:h:9000|aio:/x") == "remus:h:9000|aio:/x"
    assert tapctl.tapdisk_stack("tap2:tapdisk:remus:h:9000|aio:/x") == "remus:h:9000|aio:/x"
    with pytest.raises(ToolstackError):
        tapctl.tapdisk_stack("phy:/dev/drbd0")
    assert tapctl.minor_of("/dev/xen/blktap-2/tapdev12") == 12
    assert tapctl.minor_of("/dev/loop0") is None


def test_retarget_pauses_and_unpauses_the_tapdisk_with_the_new_stack(world):
    assert world.ts.retarget_disks("guest", world.toward_b()) == ["xvda"]
    assert world.tap.calls == [
        ["tap-ctl", "list"],
        ["tap-ctl", "pause", "-p", "2903", "-m", "2"],
        ["tap-ctl", "unpause", "-p", "2903", "-m", "2", "-a", NEW]]
    assert world.vbd(2)["stack"] == NEW and world.vbd(2)["state"] == 0
    assert world.vbd(1)["stack"] == "aio:/var/lib/xen/images/data.img"      # the other disk untouched
    assert world.xs.read(world.xvda + "/tapdisk-params") == NEW
    # xend now reports the new uname (what the remus script reads): a rerun does nothing
    world.xend_rereads_xenstore()
    assert world.ts.domain_config("guest").remus_disks[0].remus.host == "hostb"
    del world.tap.calls[:]
    assert world.ts.retarget_disks("guest", world.ts.domain_config("guest")) == []
    assert world.tap.calls == []


def test_a_running_domain_is_refused_before_any_tap_ctl():
    w = World(paused=False)
    try:
        cfg = w.toward_b()
        with pytest.raises(ToolstackError) as err:
            w.ts.retarget_disks("guest", cfg)
        assert "expected the domain paused" in str(err.value)
        assert w.tap.calls == []
    finally:
        w.server.stop()


def test_without_runner_or_xenstore_it_says_what_is_missing(world):
    ts = XendToolstack(world.server.uri, processes=object(), runner=world.tap)
    with pytest.raises(ToolstackError) as err:
        ts.retarget_disks("guest", world.toward_b())
    assert "got no xenstore" in str(err.value)
    assert world.tap.calls == []


def test_a_tapdisk_running_something_else_is_refused_before_pausing():
    w = World(running="remus:192.0.2.9:9000|aio:" + IMG)
    try:
        with pytest.raises(ToolstackError) as err:
            w.ts.retarget_disks("guest", w.toward_b())
        assert "expected tapdisk 2903 minor 2 to run remus:192.0.2.1:9000, got remus:192.0.2.9:9000" \
            in str(err.value)
        assert w.tap.calls == [["tap-ctl", "list"]]
    finally:
        w.server.stop()


def test_failed_unpause_resumes_the_old_stack_and_reports_stderr(world):
    world.tap.fail[("unpause", NEW)] = (5, "tapdisk: remus open failed")
    with pytest.raises(ToolstackError) as err:
        world.ts.retarget_disks("guest", world.toward_b())
    msg = str(err.value)
    assert "tap-ctl unpause -p 2903 -m 2 -a %s: exit 5 (EIO" % NEW in msg
    assert "stderr: tapdisk: remus open failed" in msg and "it runs %s again" % OLD in msg
    assert world.tap.calls[-1] == ["tap-ctl", "unpause", "-p", "2903", "-m", "2", "-a", OLD]
    assert world.vbd(2)["stack"] == OLD and world.vbd(2)["state"] == 0
    assert world.xs.read(world.xvda + "/tapdisk-params") == OLD


def test_a_tapdisk_already_repointed_only_updates_xenstore():
    w = World(running=NEW)          # an earlier run died after unpause, before the xenstore write
    try:
        assert w.ts.retarget_disks("guest", w.toward_b()) == ["xvda"]
        assert w.tap.calls == [["tap-ctl", "list"]]
        assert w.xs.read(w.xvda + "/tapdisk-params") == NEW
    finally:
        w.server.stop()


def test_a_vbd_left_paused_is_unpaused_with_the_new_stack():
    w = World()
    try:
        w.vbd(2)["state"] = 0x22    # an earlier run died between pause and unpause
        assert w.ts.retarget_disks("guest", w.toward_b()) == ["xvda"]
        assert w.tap.calls[1:] == [["tap-ctl", "pause", "-p", "2903", "-m", "2"],
                                   ["tap-ctl", "unpause", "-p", "2903", "-m", "2", "-a", NEW]]
        assert w.vbd(2)["stack"] == NEW and w.vbd(2)["state"] == 0
    finally:
        w.server.stop()


def test_the_fake_is_strict():
    fake = FakeTapCtl(GOLDEN_VBDS)
    with pytest.raises(AssertionError):
        fake.run(["tap-ctl", "pause", "-m", "2", "-p", "2903"])
    with pytest.raises(AssertionError):
        fake.run(["tap-ctl", "list", "-m", "2"])
    assert fake.run(["tap-ctl", "unpause", "-p", "2903", "-m", "2"])[0] == 22      # not paused: EINVAL
    assert fake.run(["tap-ctl", "pause", "-p", "9", "-m", "2"])[0] == 22           # no such tapdisk


def test_xl_has_no_retarget():
    # xl remus has no remus: disk uname to re-point (DRBD or memory-only)
    from xen_remus_ext.errors import ToolstackError
    from xen_remus_ext.toolstack.xl import XlToolstack
    xl = XlToolstack(runner=None)
    assert "cannot re-point" in xl.check_retarget()
    with pytest.raises(ToolstackError, match="cannot re-point"):
        xl.retarget_disks("vm1", None)


def test_check_retarget_says_what_is_missing(world):
    assert world.ts.check_retarget() is None
    assert "got neither" in XendToolstack(world.server.uri, processes=object()).check_retarget()


def test_preflight_refuses_reverse_only_when_the_disks_cannot_be_repointed(tmp_path):
    # refused at preflight, not with the domain paused at the protect step
    from tests.unit.failback_world import make_world, orch
    from xen_remus_ext.errors import FailbackError
    from xen_remus_ext.failback import machine
    world, _guest = make_world(tmp_path)
    o = orch(world, mode=machine.REVERSE)
    o.ts.check_retarget = lambda: "expected a Runner for tap-ctl and this host's xenstore, got no xenstore"
    direction = [c for c in o.dry_run()[2] if c.name == "direction"][0]
    assert not direction.ok and "cannot be re-pointed here" in direction.detail
    assert "got no xenstore" in direction.detail
    with pytest.raises(FailbackError) as err:
        o.run()
    assert err.value.step == "preflight"
    assert world.hosts["hostB"]["vm1"].state == "running"


def test_a_stack_longer_than_tapdisks_message_is_refused(world):
    cfg = world.toward_b()
    long_host = "h" * 250
    d = cfg.disks[0]
    cfg = cfg._replace(disks=(d._replace(uname=d.uname.replace("hostb", long_host),
                                         remus=d.remus._replace(host=long_host)),) + tuple(cfg.disks[1:]))
    with pytest.raises(ToolstackError) as err:
        world.ts.retarget_disks("guest", cfg)
    assert "at most 255 characters" in str(err.value)
    assert world.tap.calls == []
