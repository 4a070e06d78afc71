"""``protect`` through the orchestrator over the toolstack double: the
backup's copy is absent, created, seeded; a run killed after any effect or
journal write, then run again, converges: Remus protects the domain toward
B and B's copy holds every acknowledged write."""
from __future__ import absolute_import, division, print_function

import os
import random

import pytest

from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, FileDiskSync, Killed, remus_config
from xen_remus_ext.errors import FailbackError, ToolstackError
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.resync.disksync import create_sparse

PATH = "/img/vm1.img"
SIZE = 256 * 1024


class SeedingSync(FileDiskSync):
    """FileDiskSync plus protect's two calls, over the world's files."""

    def peer_state(self, dest):
        if not os.path.exists(dest):
            return {"exists": False, "size": None, "meta": None}
        return {"exists": True, "size": os.path.getsize(dest), "meta": {"current": "0" * 16}}

    def create(self, dest, size):
        if not os.path.isdir(os.path.dirname(dest)):     # the backup host's image directory
            os.makedirs(os.path.dirname(dest))
        create_sparse(dest, size)
        if self.world is not None:
            self.world.effect("create %s" % dest)


class Guest(object):
    def __init__(self, world):
        self.world = world
        self.rng = random.Random(3)
        with open(world.disk_file("hostA", PATH), "rb") as f:
            self.expected = bytearray(f.read())

    def __call__(self, _what=None):
        off = self.rng.randrange(0, SIZE // 512) * 512
        data = bytes(bytearray([self.rng.randrange(1, 256)])) * 512
        try:
            self.world.guest_write("vm1", off, data)
        except ToolstackError:
            return
        self.expected[off:off + 512] = data


def make_world(tmp_path):
    world = FakeWorld(tmp_path / "world")
    world.make_disk("hostA", PATH, SIZE, b"\x07")
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    g = Guest(world)
    world.on_effect = g
    return world, g


def protect(world, **opts):
    options = {"local_host": "hostA", "settle_timeout": 1}
    options.update(opts)
    return Orchestrator(FakeToolstack(world, "hostA"), FakeToolstack(world, "hostB"), "vm1", "hostB",
                        mode=machine.PROTECT_MODE, options=options, disk_sync=SeedingSync(world),
                        progress=lambda line: None, clock=FakeClock())


def assert_protected(world, guest):
    assert world.remus[("hostA", "vm1")] == "hostB"
    assert world.hosts["hostA"]["vm1"].state == "running"
    for _ in range(3):
        guest()
    assert world.read_disk("hostB", PATH) == world.read_disk("hostA", PATH) == bytes(guest.expected)


def test_protect_creates_and_seeds_the_backup_copy(tmp_path):
    world, guest = make_world(tmp_path)
    assert not os.path.exists(world.disk_file("hostB", PATH))
    rec = protect(world).run()
    assert rec["state"] == machine.DONE and rec["mode"] == machine.PROTECT_MODE
    assert [d.get("created") for d in rec["disks"]] == [True]
    assert_protected(world, guest)
    # a rerun is a no-op
    effects = world.effects
    assert protect(world).run()["state"] == machine.DONE
    assert world.effects == effects


def test_protect_killed_after_every_effect_converges(tmp_path, counted_journal):
    world, guest = make_world(tmp_path / "clean")
    counted_journal["world"] = world
    protect(world).run()
    total = world.effects
    assert total > 20
    for n in range(1, total + 1):
        world, guest = make_world(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            protect(world).run()
        rec = protect(world).run(resume=(n % 2 == 0 and journal.load("vm1") is not None
                                         and journal.load("vm1")["state"] not in machine.TERMINAL))
        assert rec["state"] == machine.DONE, n
        counted_journal["world"] = None
        assert_protected(world, guest)


def test_protect_abort_leaves_it_running_unprotected(tmp_path):
    world, guest = make_world(tmp_path)
    world.kill_at = 6
    with pytest.raises(Killed):
        protect(world).run()
    rec = protect(world).abort()
    assert rec["state"] in (machine.ABORTED, machine.DONE)
    if rec["state"] == machine.ABORTED:
        assert ("hostA", "vm1") not in world.remus
    assert world.hosts["hostA"]["vm1"].state == "running"


def test_supervisors_start_on_both_hosts_after_the_domain_runs(tmp_path):
    world, guest = make_world(tmp_path)
    calls = []

    def supervise(where):
        calls.append((where, world.hosts["hostA"]["vm1"].state, ("hostA", "vm1") in world.remus))
    assert protect(world, supervise=supervise).run()["state"] == machine.DONE
    assert calls == [(None, "running", True), ("hostB", "running", True)]


def test_protect_resume_and_abort_without_a_journal_name_the_protect_journal(tmp_path):
    world, _ = make_world(tmp_path)
    with pytest.raises(FailbackError) as err:
        protect(world).run(resume=True)
    assert "expected an unfinished protect journal" in str(err.value)
    assert "failback journal" not in str(err.value)
    with pytest.raises(FailbackError) as err:
        protect(world).abort()
    assert "--abort: expected an unfinished protect journal, found none" in str(err.value)
    assert "failback journal" not in str(err.value)


def test_a_protect_journal_in_a_state_outside_its_plan_is_named_as_such():
    with pytest.raises(FailbackError) as err:
        machine.next_step(machine.PROTECT_MODE, machine.MIGRATED)
    assert str(err.value).startswith("protect journal: state 'migrated' is not part of the protect plan")
    with pytest.raises(FailbackError) as err:
        machine.index_of(machine.FAILBACK, "nowhere")
    assert str(err.value).startswith("failback journal: unknown state 'nowhere'")


def test_protect_with_hold_backup_leaves_a_copy_that_waits_for_the_takeover(tmp_path):
    world, guest = make_world(tmp_path)
    rec = protect(world, hold_backup=True).run()
    assert rec["state"] == machine.DONE
    assert [c for c in rec["checks"] if c["name"] == "hold-backup"][0]["ok"] is True
    assert_protected(world, guest)
    b = FakeToolstack(world, "hostB")
    assert b.remus_backup("vm1") == {"state": "receiving", "checkpoints": None}
    with pytest.raises(ToolstackError, match="expected a held backup copy whose stream broke"):
        b.remus_takeover("vm1")
    world.break_stream("hostA", "vm1")
    copy = world.hosts["hostB"]["vm1"]
    assert copy.state == "paused" and b.remus_backup("vm1")["state"] == "broken"
    b.remus_takeover("vm1")
    assert copy.state == "running" and b.remus_backup("vm1") is None


def test_without_hold_backup_the_copy_resumes_by_itself(tmp_path):
    world, _guest = make_world(tmp_path)
    protect(world).run()
    world.break_stream("hostA", "vm1")
    assert world.hosts["hostB"]["vm1"].state == "running" and world.where("vm1") == ["hostB"]


class NoHold(FakeToolstack):
    def check_hold(self):
        return "this toolstack resumes a Remus backup by itself when its checkpoint stream breaks"


def test_hold_backup_is_refused_in_preflight_where_the_toolstack_cannot_hold(tmp_path):
    world, _guest = make_world(tmp_path)
    o = Orchestrator(NoHold(world, "hostA"), FakeToolstack(world, "hostB"), "vm1", "hostB",
                     mode=machine.PROTECT_MODE, options={"local_host": "hostA", "hold_backup": True},
                     disk_sync=SeedingSync(world), progress=lambda line: None, clock=FakeClock())
    with pytest.raises(FailbackError, match="--hold-backup: this toolstack resumes a Remus backup by itself"):
        o.run()
    assert ("hostA", "vm1") not in world.remus and not os.path.exists(world.disk_file("hostB", PATH))
    # the refusal is journaled as such, and the next protect needs no --abort
    rec = journal.load("vm1")
    assert rec["state"] == machine.REFUSED and "--hold-backup" in rec["error"]
    assert protect(world).run()["state"] == machine.DONE
    assert world.remus[("hostA", "vm1")] == "hostB"


def test_discard_of_a_receiving_copy_leaves_the_primary_unprotected(tmp_path):
    world, _guest = make_world(tmp_path)
    protect(world, hold_backup=True).run()
    FakeToolstack(world, "hostB").remus_discard("vm1")
    assert ("hostA", "vm1") not in world.remus and "vm1" not in world.hosts["hostB"]
    assert world.hosts["hostA"]["vm1"].state == "running"
