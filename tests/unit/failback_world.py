"""The world of the failback runner's unit tests: two FakeToolstack hosts
(tests/fakes/fake_toolstack.py) with real disk files, the domain failed over
to hostB, its stale home copy on hostA, and a guest that writes between every
two effects and keeps the image its acknowledged writes add up to.
"""
from __future__ import absolute_import, division, print_function

import random

import pytest

from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, FileDiskSync, Killed, remus_config
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.failback import machine
from xen_remus_ext.failback.orchestrator import Orchestrator

SIZE = 256 * 1024
PATH = "/img/vm1.img"


class Guest(object):
    """Writes 512-byte records wherever the domain runs; keeps the image every
    acknowledged write adds up to."""

    def __init__(self, world, seed=1):
        self.world = world
        self.rng = random.Random(seed)
        self.expected = bytearray(world.read_disk("hostB", PATH))
        self.acked = 0

    def __call__(self, _what=None):
        running = [h for h in self.world.where("vm1") if self.world.hosts[h]["vm1"].state == "running"]
        if len(running) != 1:
            return
        off = self.rng.randrange(0, SIZE // 512) * 512
        data = bytes(bytearray(self.rng.randrange(256) for _ in range(16))) * 32
        try:
            self.world.guest_write("vm1", off, data)
        except ToolstackError:   # held by block-remus until the backup connects: not acknowledged
            return
        self.expected[off:off + 512] = data
        self.acked += 1


def make_world(tmp_path, guest=True):
    world = FakeWorld(tmp_path / "world")
    world.make_disk("hostA", PATH, SIZE, b"\x01")          # home copy, stale since the failover
    world.make_disk("hostB", PATH, SIZE, b"\x01")
    with open(world.disk_file("hostB", PATH), "r+b") as f:  # written on B after the failover
        for off in range(0, SIZE, 8192):
            f.seek(off)
            f.write(b"B" * 1024)
    world.create("hostB", remus_config("vm1", backup="hostB", path=PATH))
    g = Guest(world)
    if guest:
        world.on_effect = g
    return world, g


def orch(world, mode=machine.FAILBACK, sync=None, **opts):
    options = {"local_host": "hostB"}
    options.update(opts)
    lines = []
    o = Orchestrator(FakeToolstack(world, "hostB"), FakeToolstack(world, "hostA"), "vm1", "hostA",
                     mode=mode, options=options, disk_sync=sync or FileDiskSync(world), progress=lines.append,
                     clock=FakeClock())
    o.lines = lines
    return o


def assert_home_and_protected(world, guest):
    assert world.where("vm1") == ["hostA"]
    assert world.hosts["hostA"]["vm1"].state == "running"
    assert world.remus[("hostA", "vm1")] == "hostB"
    assert world.read_disk("hostA", PATH) == bytes(guest.expected)   # 0 acknowledged writes lost
    for _ in range(5):                                                # Remus mirrors from now on
        guest()
    assert world.read_disk("hostB", PATH) == world.read_disk("hostA", PATH) == bytes(guest.expected)


def killed_in_migration(world, run):
    """Hold the migration and kill ``run()`` (:class:`Killed`) right after the
    incoming copy appeared on the peer, as a runner killed while the
    toolstack migrates; the toolstack is left migrating."""
    world.hold_migrations = True
    real = world.effect

    def effect(what):
        real(what)
        if what.startswith("incoming"):
            raise Killed(what)
    world.effect = effect
    try:
        with pytest.raises(Killed):
            run()
    finally:
        world.effect = real
