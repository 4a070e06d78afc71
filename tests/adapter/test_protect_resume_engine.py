"""protect and failback --resume over the real resync engine: a pre-copy
interrupted part-way leaves a resume journal; the guest then writes inside
a range that pre-copy had finished, before the resumed run marks its new
dirty-block tracker.  The resumed pre-copy must find that write (it
compares the finished ranges by digests), else the tracked final delta,
which knows only the writes after its mark, leaves the backup copy stale
while its generation says it is in sync.
"""
from __future__ import absolute_import, division, print_function

import os
import time

import pytest

from tests.adapter.test_resync_resume_changed import Interrupted, journal_done, released
from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, remus_config
from xen_remus_ext.errors import FailbackError
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.resync import journal as resync_journal
from xen_remus_ext.resync import meta, plan, sender
from xen_remus_ext.resync.disksync import ResyncDiskSync

MiB = 1 << 20
PATH = "/img/vm1.img"
SIZE = 8 * MiB


def total(ranges):
    return sum(e - s for s, e in ranges)


def make_world(tmp_path):
    world = FakeWorld(tmp_path / "world")
    world.make_disk("hostA", PATH, SIZE, b"\x07")
    with open(world.disk_file("hostA", PATH), "r+b") as f:
        f.write(os.urandom(SIZE))
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    return world


def protect(world):
    return Orchestrator(FakeToolstack(world, "hostA"), FakeToolstack(world, "hostB"), "vm1", "hostB",
                        mode=machine.PROTECT_MODE, options={"local_host": "hostA", "settle_timeout": 1},
                        disk_sync=ResyncDiskSync(mode="auto"), progress=lambda line: None, clock=FakeClock())


def test_protect_resume_finds_a_write_into_a_seeded_range(tmp_path, monkeypatch):
    world = make_world(tmp_path)
    backup = world.disk_file("hostB", PATH)
    os.makedirs(os.path.dirname(backup))      # the backup host's image directory
    real = sender.SenderSession._mark
    count = [0]

    def mark(self, pending):
        # checksum mode marks only what precedes its refinements in flight
        # (the last call marks the rest): once a MiB is marked, wait until
        # the receiver journaled it, then stop
        rest = real(self, pending)
        count[0] += total(plan.normalize(pending)) - total(rest)
        if count[0] >= MiB:
            t0 = time.time()
            while total(journal_done(backup)) < MiB and time.time() - t0 < 20:
                time.sleep(0.02)
            raise Interrupted("the seeding pre-copy stops here, after %d bytes marked" % count[0])
        return rest
    monkeypatch.setattr(sender.SenderSession, "_mark", mark)
    with pytest.raises(FailbackError):
        protect(world).run()
    monkeypatch.setattr(sender.SenderSession, "_mark", real)
    rec = journal.load("vm1")
    assert rec["state"] not in machine.TERMINAL and "precopy" in rec["error"]
    done = resync_journal.Journal.load(released(backup)).done
    assert done and done[0] == (0, done[0][1]) and done[0][1] >= MiB, done
    # the guest writes inside the seeded range while no run watches it
    world.guest_write("vm1", done[0][1] // 2, os.urandom(4096))
    rec = protect(world).run(resume=True)
    assert rec["state"] == machine.DONE
    assert world.read_disk("hostB", PATH) == world.read_disk("hostA", PATH), \
        "protect --resume left the backup copy stale where the interrupted pre-copy had finished"
    assert meta.load(backup).consistent
    passes = rec["disks"][0]["precopy"]
    assert passes[0]["resumed"] >= done[0][1] and passes[0]["resent"] >= 4096, passes
