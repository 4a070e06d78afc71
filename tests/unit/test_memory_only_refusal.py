"""Honest protection on xl: memory-only Remus (``xl remus -d``) leaves the
backup's copy of a writable disk behind, so protect and failback refuse it
for a disk that is neither shared nor DRBD unless the loss is accepted by
name (``--lose-disk-writes-at-failover``)."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, FileDiskSync, remus_config
from xen_remus_ext import model
from xen_remus_ext.errors import FailbackError
from xen_remus_ext.failback import machine, preflight
from xen_remus_ext.failback.orchestrator import Orchestrator

PATH = "/img/vm1.img"


def disk(uname, path):
    return model.DiskSpec(uname, "xvda", "w", remus=model.RemusSpec("", None, "raw", path))


def test_check_memory_only():
    plain = disk("phy:/srv/vm1.img", "/srv/vm1.img")
    name, ok, detail = preflight.check_memory_only(plain, False)
    assert not ok and "--lose-disk-writes-at-failover" in detail and "acknowledged" in detail
    assert preflight.check_memory_only(plain, True)[1]
    assert "LOSES" in preflight.check_memory_only(plain, True)[2]
    assert preflight.check_memory_only(plain, False, shared_disks=("xvda",))[1]
    assert preflight.check_memory_only(disk("phy:/dev/drbd0", "/dev/drbd0"), False)[1]


def world_running_here(tmp_path):
    world = FakeWorld(tmp_path / "world")
    for h in ("hostA", "hostB"):
        world.make_disk(h, PATH, 1 << 16)
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    return world


@pytest.mark.parametrize("accept", [False, True])
def test_protect_refuses_memory_only_unless_accepted(tmp_path, accept):
    world = world_running_here(tmp_path)
    opts = {"disk": False, "local_host": "hostA", "discard_peer": True}
    if accept:
        opts["accept_disk_loss"] = True
    o = Orchestrator(FakeToolstack(world, "hostA"), FakeToolstack(world, "hostB"), "vm1", "hostB",
                     mode=machine.PROTECT_MODE, options=opts, disk_sync=_Sync(world), progress=lambda line: None)
    if not accept:
        with pytest.raises(FailbackError) as ei:
            o.run()
        assert "memory-only" in str(ei.value) and ("hostA", "vm1") not in world.remus
    else:
        assert o.run()["state"] == machine.DONE
        assert world.remus[("hostA", "vm1")] == "hostB"


class _Sync(FileDiskSync):
    """FileDiskSync with the two calls protect adds."""

    def peer_state(self, dest):
        import os
        return {"exists": os.path.exists(dest), "size": os.path.getsize(dest) if os.path.exists(dest) else None,
                "meta": {"current": "0" * 16}}

    def create(self, dest, size):
        raise AssertionError("the copy exists")
