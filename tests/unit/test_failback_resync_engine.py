"""The failback runner with the REAL resync engine and generation metadata
(resync/disksync.py ResyncDiskSync -> resync.api, resync.meta) over local
files; the toolstack is the FakeToolstack (it stands in for xend/xl as in
test_failback_orchestrator.py)."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.fakes.fake_toolstack import FakeToolstack
from tests.fakes.fake_clock import FakeClock
from tests.unit.failback_world import PATH, assert_home_and_protected, make_world
from xen_remus_ext.errors import FailbackError
from xen_remus_ext.failback import machine
from xen_remus_ext.resync.disksync import ResyncDiskSync
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.resync import meta


def generations(world, split=False):
    a, b = world.disk_file("hostA", PATH), world.disk_file("hostB", PATH)
    m = meta.ensure(a, 256 * 1024, role="primary")
    meta.mark_synced(b, m, role="backup")
    meta.rotate(b, role="primary")            # B failed over: its writes are new
    if split:
        meta.rotate(a, role="primary")        # ...and A took writes of its own meanwhile
    return a, b


def orch(world, mode=machine.FAILBACK, **opts):
    options = {"local_host": "hostB"}
    options.update(opts)
    return Orchestrator(FakeToolstack(world, "hostB"), FakeToolstack(world, "hostA"), "vm1", "hostA",
                        mode=mode, options=options, disk_sync=ResyncDiskSync(), clock=FakeClock(),
                        progress=lambda line: None)


def test_failback_with_the_real_engine(tmp_path):
    world, guest = make_world(tmp_path)
    a, b = generations(world)
    rec = orch(world).run()
    assert rec["state"] == machine.DONE
    modes = [p["mode"] for p in rec["disks"][0]["precopy"]] + [rec["disks"][0]["final"]["mode"]]
    assert modes[0] == "checksum" and modes[-1] == "tracked", modes
    assert_home_and_protected(world, guest)
    ma, mb = meta.load(a), meta.load(b)
    assert ma.current == mb.current and ma.consistent
    assert mb.bitmap is None                  # protected again: the bitmap generation is history


def test_split_brain_by_real_generations_is_refused(tmp_path):
    world, _guest = make_world(tmp_path, guest=False)
    a, _b = generations(world, split=True)
    before = world.read_disk("hostA", PATH)
    with pytest.raises(FailbackError) as exc:
        orch(world).run()
    assert "split brain" in str(exc.value) and exc.value.step == "preflight"
    assert world.read_disk("hostA", PATH) == before and world.where("vm1") == ["hostB"]


def test_split_brain_with_the_loser_named(tmp_path):
    world, guest = make_world(tmp_path)
    generations(world, split=True)
    assert orch(world, discard_peer=True).run()["state"] == machine.DONE
    assert_home_and_protected(world, guest)


def test_status_shows_generations(tmp_path, capsys):
    from xen_remus_ext.failback import api
    from xen_remus_ext.cli import failback_cmd
    world, _guest = make_world(tmp_path, guest=False)
    _a, b = generations(world)
    rows = api.status(FakeToolstack(world, "hostB"))
    mb = meta.load(b)
    assert rows[0]["disks"] == [{"vdev": "xvda", "path": PATH, "backup": "hostB", "generation": mb.current,
                                 "bitmap": mb.bitmap, "consistent": True}]
    text = failback_cmd.format_status(rows)
    assert "xvda -> hostB: generation %s, writes since %s" % (mb.current, mb.bitmap) in text
