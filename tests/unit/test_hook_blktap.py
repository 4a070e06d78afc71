"""The ``Blktap2Controller.migrate`` override (the in-process hook route).

xend cannot run here.  The classes below stand in for xend's, following
docs/xen-facts.md section 4 exactly where it matters to the override:
``DevController.migrate``/``recover_migrate`` run xend-config's
``external-migration-tool`` through ``os.popen`` with ``-type -step -host
-domname [-recover]`` and fail on a non-zero status; ``Blktap2Controller``
inherits them; ``migrate_devices`` walks every device per step and, when one
raises, calls ``recover_migrate`` on every device and re-raises (as
``XendDomainInfo.migrateDevices``).  Disks, their generation metadata and
the tool process are real.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

import pytest

from xen_remus_ext.errors import FailbackError
from xen_remus_ext.xend import hook as migrate_hook
from xen_remus_ext.resync import meta
from xen_remus_ext.xend import blktap

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class VmError(Exception):
    pass


class DevController(object):
    tool = None  # xend-config's external-migration-tool
    tool_lines = []

    def __init__(self, vm, device_class):
        self.vm = vm
        self.deviceClass = device_class

    def _tool(self, step, dst, dom, extra=""):
        if not self.tool:
            return 0
        fd = os.popen("%s -type %s -step %d -host %s -domname %s%s"
                      % (self.tool, self.deviceClass, step, dst, dom, extra))
        for line in fd:
            DevController.tool_lines.append(line.rstrip())
        rc = fd.close()
        if rc:
            raise VmError("Migration tool returned %d" % (rc >> 8))
        return 0

    def migrate(self, deviceConfig, network, dst, step, domName):
        return self._tool(step, dst, domName)

    def recover_migrate(self, deviceConfig, network, dst, step, domName):
        return self._tool(step, dst, domName, " -recover")


class Blktap2Controller(DevController):
    pass


class VM(object):
    def __init__(self):
        self.info = {"name_label": "web1", "other_config": {}}


def migrate_devices(devices, network, dst, step, dom):
    done = 0
    try:
        for ctrl, conf in devices:
            ctrl.migrate(conf, network, dst, step, dom)
            done += 1
    except Exception:
        for ctrl, conf in devices:
            ctrl.recover_migrate(conf, network, dst, step - 1 if done == 0 else step, dom)
        raise


class Delta(object):
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def __call__(self, domname, host):
        self.calls.append((domname, host))
        if self.fail:
            raise self.fail
        return {"sent": True, "by": "xend-hook", "seconds": 0.012}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("PYTHONPATH", TOP)
    del DevController.tool_lines[:]
    cls = type("Blktap2Controller", (Blktap2Controller,), {})
    img = tmp_path / "web1.img"
    img.write_bytes(b"\0" * 65536)
    gen = meta.ensure(str(img), 65536, role="primary").current
    vm = VM()
    devices = [
        (cls(vm, "tap2"), ["tap2", ["uname", "tap:remus:10.0.0.2:9000|aio:%s" % img],
                           ["dev", "xvda:disk"], ["mode", "w"]]),
        (cls(vm, "tap2"), ["tap2", ["uname", "tap:aio:/srv/other.img"], ["dev", "xvdb"],
                           ["mode", "w"]]),
        (DevController(vm, "vif"), ["vif", ["mac", "00:16:3e:00:00:01"]]),
    ]
    return cls, vm, devices, gen


def run_migration(devices, dst="10.0.0.1", network=True, steps=(0, 1, 2, 3)):
    for step in steps:
        migrate_devices(devices, network, dst, step, "web1")


def test_override_sends_delta_once_and_records_generation(setup):
    cls, vm, devices, gen = setup
    delta = Delta()
    assert blktap.install(cls, delta_fn=delta) is True
    assert blktap.install(cls, delta_fn=delta) is False  # idempotent
    run_migration(devices)
    assert delta.calls == [("web1", "10.0.0.1")]
    # nothing in the config: xend's migration SXP (legacy keys) drops other_config
    assert vm.info["other_config"] == {}


def test_override_and_tool_together_send_once(setup):
    cls, _vm, devices, _gen = setup
    DevController.tool = "%s -m xen_remus_ext.xend.hook_tool" % sys.executable
    try:
        delta = Delta()
        blktap.install(cls, delta_fn=delta)
        run_migration(devices)
    finally:
        DevController.tool = None
    assert delta.calls == [("web1", "10.0.0.1")]
    assert "xen-remus hook: tap2 step 2 web1 -> 10.0.0.1: final delta already acknowledged" \
        in DevController.tool_lines
    assert "xen-remus hook: vif step 2 web1 -> 10.0.0.1: nothing to do" in DevController.tool_lines


def test_failed_delta_fails_the_migration_and_recovers(setup):
    cls, _vm, devices, _gen = setup
    delta = Delta(fail=FailbackError("web1: final disk delta to 10.0.0.1 failed: EOF"))
    blktap.install(cls, delta_fn=delta)
    run_migration(devices, steps=(0, 1))
    with pytest.raises(FailbackError):
        run_migration(devices, steps=(2,))
    assert not os.path.exists(migrate_hook.mark_path("web1", "10.0.0.1"))
    # the domain resumed here; the next attempt sends again
    delta.fail = None
    run_migration(devices, steps=(1, 2))
    assert len(delta.calls) == 2


def test_save_to_file_touches_nothing(setup, tmp_path):
    cls, vm, devices, _gen = setup
    delta = Delta()
    blktap.install(cls, delta_fn=delta)
    run_migration(devices, dst=str(tmp_path / "web1.chk"), network=False)
    assert delta.calls == [] and vm.info["other_config"] == {}


def test_device_value_reads_xend_device_sxp():
    conf = ["tap2", ["uname", "tap:remus:h:1|aio:/x"], ["dev", "xvda"]]
    assert blktap.device_value(conf, "uname") == "tap:remus:h:1|aio:/x"
    assert blktap.device_value(conf, "mode") is None
    assert blktap.device_value("junk", "uname") is None


def test_override_covers_tap_and_tap2_on_old_style_classes():
    """xm maps ``tap:`` to BlktapController (blktap1) and only ``tap2:`` to
    Blktap2Controller; xend's controllers are old-style classes on 2.7.
    Installing on Blktap2Controller wraps the migrate both inherit."""
    ns = {}
    exec("class DevController:\n"
         "    deviceClass = 'vbd'\n"
         "    def migrate(self, cfg, network, dst, step, domName=''):\n"
         "        return 'base %s' % self.deviceClass\n"
         "    def recover_migrate(self, cfg, network, dst, step, domName=''):\n"
         "        return 'recover'\n"
         "class BlktapController(DevController):\n"
         "    deviceClass = 'tap'\n"
         "class Blktap2Controller(BlktapController):\n"
         "    deviceClass = 'tap2'\n", ns)
    seen = []

    def delta(domname, host):
        seen.append((domname, host))
        return None      # no failback in progress: nothing sent
    del blktap.INSTALLED[:]
    assert blktap.install(ns["Blktap2Controller"], delta_fn=delta) is True
    assert blktap.installed() == ["BlktapController", "Blktap2Controller"]
    assert blktap.install(ns["Blktap2Controller"], delta_fn=delta) is False
    tap, tap2 = ns["BlktapController"](), ns["Blktap2Controller"]()
    assert tap.migrate(["tap"], True, "hostb", 2, "web1") == "base tap"
    assert tap2.migrate(["tap2"], True, "hostb", 2, "web1") == "base tap2"
    assert seen == [("web1", "hostb"), ("web1", "hostb")]
    assert ns["DevController"]().migrate(["vbd"], True, "hostb", 2, "web1") == "base vbd"
    assert len(seen) == 2        # plain vbds are not ours
    del blktap.INSTALLED[:]
