"""failback/journal.py (atomic JSON record) and failback/delta.py (the final
delta the xend migration hook sends), plus the xend path of the runner.

The xend path uses FakeToolstack(kind="xend"), which stands in for xend's
migration as docs/xen-facts.md section 4 describes it: no paused arrival; the
device-migrate hook runs at step 2 while the source is suspended; and, per
section 5, block-remus holds the arrived domain's writes until the backup
connects.
"""
from __future__ import absolute_import, division, print_function

import os

import pytest

from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FileDiskSync, Killed
from tests.unit.failback_world import PATH, assert_home_and_protected, killed_in_migration, make_world
from xen_remus_ext.errors import FailbackError, JournalError, ToolstackError
from xen_remus_ext.failback import delta, journal, machine
from xen_remus_ext.failback.orchestrator import Orchestrator


def test_journal_round_trip_is_atomic_and_private(tmp_path):
    rec = journal.new_record("vm1", "hostA", machine.FAILBACK, "hostB", "xl", {"rate": 1 << 20}, now=1.0)
    path = journal.save(rec)
    assert journal.load("vm1") == rec
    d = os.path.dirname(path)
    assert os.listdir(d) == ["vm1.json"]                  # no temp file left behind
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert journal.list_domains() == ["vm1"]
    rec["state"] = machine.PRECOPIED
    journal.save(rec)
    assert journal.load("vm1")["state"] == machine.PRECOPIED
    journal.remove("vm1")
    assert journal.load("vm1") is None and journal.list_domains() == []
    journal.remove("vm1")                                  # removing twice is fine


@pytest.mark.parametrize("name", ["../etc/passwd", "", "a b", ".."])
def test_journal_refuses_names_that_are_not_files(name):
    with pytest.raises(JournalError):
        journal.journal_path(name)


@pytest.mark.parametrize("change,words", [
    ({"version": 1}, "expected journal version 2"),    # version 1 had no checksum
    ({"mode": "sideways"}, "mode"),
    ({"state": "quiesced"}, "quiesced"),     # a reverse-only state in a failback journal
])
def test_journal_rejects_foreign_records(change, words):
    rec = journal.new_record("vm1", "hostA", machine.FAILBACK)
    rec.update(change)
    journal.save(rec)
    with pytest.raises(JournalError) as exc:
        journal.load("vm1")
    assert words in str(exc.value)


def test_history_is_bounded():
    rec = journal.new_record("vm1", "hostA", machine.FAILBACK)
    for i in range(journal.MAX_HISTORY * 2):
        journal.note(rec, i, "event", i)
    journal.save(rec)
    hist = journal.load("vm1")["history"]
    assert len(hist) == journal.MAX_HISTORY and hist[0][1] == "created" and hist[-1][2] == 2 * journal.MAX_HISTORY - 1


def _migrating_journal(world):
    rec = journal.new_record("vm1", "hostA", machine.FAILBACK, "hostB")
    rec["state"], rec["step"] = machine.PRECOPIED, machine.MIGRATE
    rec["disks"] = [{"vdev": "xvda", "src": world.disk_file("hostB", PATH),
                     "dest": world.disk_file("hostA", PATH), "precopy": [], "final": None}]
    journal.save(rec)
    return rec


def test_final_delta_for_sends_and_records(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    _migrating_journal(world)
    assert world.read_disk("hostA", PATH) != world.read_disk("hostB", PATH)
    rec = delta.final_delta_for("vm1", "hostA", disk_sync=FileDiskSync())
    assert rec["sent"] and rec["by"] == "xend-hook"
    assert world.read_disk("hostA", PATH) == world.read_disk("hostB", PATH)
    on_disk = journal.load("vm1")
    assert on_disk["delta"]["sent"] and on_disk["disks"][0]["final"]["mode"] == "checksum"
    # once per migration: a second call sends nothing more
    sync = FileDiskSync()
    assert delta.final_delta_for("vm1", "hostA", disk_sync=sync)["sent"] and sync.calls == []


def test_final_delta_for_is_a_no_op_without_a_migrating_failback(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    sync = FileDiskSync()
    assert delta.final_delta_for("vm1", "hostA", disk_sync=sync) is None       # plain xm migrate
    rec = _migrating_journal(world)
    rec["step"] = None
    journal.save(rec)
    assert delta.final_delta_for("vm1", "hostA", disk_sync=sync) is None       # not in migrate
    assert sync.calls == []


def test_final_delta_for_refuses_another_destination(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    _migrating_journal(world)
    with pytest.raises(FailbackError) as exc:
        delta.final_delta_for("vm1", "hostC", disk_sync=FileDiskSync())
    assert "hostC" in str(exc.value) and "hostA" in str(exc.value)


def test_final_delta_failure_is_journaled_and_raised(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    _migrating_journal(world)
    sync = FileDiskSync()
    sync.relations[world.disk_file("hostA", PATH)] = "split-brain"
    with pytest.raises(FailbackError) as exc:
        delta.final_delta_for("vm1", "hostA", disk_sync=sync)
    assert exc.value.step == machine.FINAL_DELTA
    rec = journal.load("vm1")
    assert not rec["delta"]["sent"] and "split-brain" in rec["error"]


def xend_orch(world):
    return Orchestrator(FakeToolstack(world, "hostB", kind="xend"), FakeToolstack(world, "hostA", kind="xend"),
                        "vm1", "hostA", options={"local_host": "hostB"}, disk_sync=FileDiskSync(world),
                        progress=lambda line: None)


def test_xend_path_hook_sends_the_delta_while_suspended(tmp_path):
    world, guest = make_world(tmp_path)
    world.migrate_hook = lambda dom, dst: delta.final_delta_for(dom, dst, disk_sync=FileDiskSync(world))
    rec = xend_orch(world).run()
    assert rec["state"] == machine.DONE
    assert rec["delta"]["by"] == "xend-hook"
    assert not any(c for c in rec["history"] if c[1] == "step" and c[2] == machine.FINAL_DELTA and False)
    assert_home_and_protected(world, guest)


def test_xend_path_without_the_hook_refuses_to_run_a_stale_disk(tmp_path):
    world, guest = make_world(tmp_path)
    with pytest.raises(FailbackError) as exc:
        xend_orch(world).run()
    # the domain arrived running, no delta recorded: the runner must not go on
    assert exc.value.step == machine.FINAL_DELTA
    assert world.where("vm1") == ["hostA"]


def test_xend_path_hook_failure_fails_the_migration(tmp_path):
    world, guest = make_world(tmp_path)

    def broken(dom, dst):
        raise ToolstackError("resync receiver on %s unreachable" % dst)
    world.migrate_hook = broken
    with pytest.raises(FailbackError) as exc:
        xend_orch(world).run()
    assert exc.value.step == machine.MIGRATE and "unreachable" in str(exc.value)
    assert world.where("vm1") == ["hostB"] and world.hosts["hostB"]["vm1"].state == "running"
    world.migrate_hook = lambda dom, dst: delta.final_delta_for(dom, dst, disk_sync=FileDiskSync(world))
    assert xend_orch(world).run()["state"] == machine.DONE
    assert_home_and_protected(world, guest)


def test_xend_path_killed_after_migration_resumes(tmp_path):
    world, guest = make_world(tmp_path)
    world.migrate_hook = lambda dom, dst: delta.final_delta_for(dom, dst, disk_sync=FileDiskSync(world))
    # kill right after the source went away (the last effect of migrate)
    o = xend_orch(world)
    real = world.effect

    def effect(what):
        real(what)
        if what.startswith("migrated"):
            raise Killed(what)
    world.effect = effect
    with pytest.raises(Killed):
        o.run()
    world.effect = real
    assert journal.load("vm1")["delta"]["sent"]
    assert xend_orch(world).run()["state"] == machine.DONE
    assert_home_and_protected(world, guest)


def test_xend_path_killed_mid_migration_waits_for_xend_then_resumes(tmp_path):
    """Killed while xend migrates (the real xend lab showed it): the source
    is named migrating-vm1 for the whole save, the incoming copy stays
    paused until its restore ends, and the hook's final delta lands in the
    journal file meanwhile.  The rerun must wait for all that, not take the
    source for gone and the paused copy for one that arrived paused (it
    then sent a delta of its own and found the domain running)."""
    world, guest = make_world(tmp_path)
    killed_in_migration(world, xend_orch(world).run)
    assert sorted(world.hosts["hostB"]) == ["migrating-vm1"] and world.hosts["hostA"]["vm1"].state == "paused"
    src = FakeToolstack(world, "hostB", kind="xend")

    def xend_goes_on(n):        # xend's save: step 2 runs the hook; then the restore ends
        if n == 2:
            delta.final_delta_for("vm1", "hostA", disk_sync=FileDiskSync(world))
        elif n == 4:
            src.complete_migration("vm1", "hostA")
    o = xend_orch(world)
    o.clock = FakeClock(tick=0, on_sleep=xend_goes_on)
    rec = o.run()
    assert rec["state"] == machine.DONE and o.clock.sleeps == 4
    assert rec["delta"]["by"] == "xend-hook"
    assert not any(w.startswith("destroy") for w in world.log)
    assert_home_and_protected(world, guest)


def test_xend_path_abort_mid_migration_says_the_disks_hold_writes(tmp_path):
    """--abort after a kill while xend migrated: the migration ends on its
    own (xend), the hook's delta went; the safe state is home, running,
    unprotected, and the abort says block-remus holds its writes there."""
    world, guest = make_world(tmp_path)
    killed_in_migration(world, xend_orch(world).run)
    src = FakeToolstack(world, "hostB", kind="xend")

    def xend_goes_on(n):
        if n == 1:
            delta.final_delta_for("vm1", "hostA", disk_sync=FileDiskSync(world))
            src.complete_migration("vm1", "hostA")
    lines = []
    o = Orchestrator(FakeToolstack(world, "hostB", kind="xend"), FakeToolstack(world, "hostA", kind="xend"),
                     "vm1", "hostA", options={"local_host": "hostB"}, disk_sync=FileDiskSync(world),
                     progress=lines.append, clock=FakeClock(tick=0, on_sleep=xend_goes_on))
    rec = o.abort()
    assert rec["state"] == machine.ABORTED and rec["step"] is None
    assert world.where("vm1") == ["hostA"] and world.hosts["hostA"]["vm1"].state == "running"
    assert world.read_disk("hostA", PATH) == bytes(guest.expected)          # nothing acknowledged was lost
    assert world.hosts["hostA"]["vm1"].awaiting_backup                     # block-remus holds its writes
    assert any("hold its new writes" in ln and "xen-remus protect vm1 hostB" in ln for ln in lines), lines


def test_a_changed_byte_that_still_parses_is_refused_by_checksum(tmp_path):
    """The chaos campaign saw one-byte changes that still parsed as a valid
    record (e.g. a digit in a timing or a size); the sum refuses them."""
    rec = journal.new_record("vmsum", "hostA", "failback", now=1.0)
    rec["disks"] = [{"vdev": "xvda", "path": "/img", "src": "/img", "dest": "hostA:/img", "size": 1048576}]
    path = journal.save(rec, base=str(tmp_path))
    assert journal.load("vmsum", base=str(tmp_path))["disks"][0]["size"] == 1048576
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("1048576", "1048577"))
    with pytest.raises(JournalError) as exc:
        journal.load("vmsum", base=str(tmp_path))
    assert "checksum mismatch" in str(exc.value) and path in str(exc.value)


def test_the_checksum_survives_a_save_load_save_cycle(tmp_path):
    rec = journal.new_record("vmcyc", "hostA", "failback", now=2.5)
    journal.save(rec, base=str(tmp_path))
    again = journal.load("vmcyc", base=str(tmp_path))
    assert "sum" not in again
    journal.save(again, base=str(tmp_path))
    assert journal.load("vmcyc", base=str(tmp_path)) == again


class PreparingSync(FileDiskSync):
    """FileDiskSync that records what was prepared, and which sync used it."""

    def __init__(self, world):
        FileDiskSync.__init__(self, world)
        self.prepared = set()
        self.used = []
        self.released = 0

    def prepare(self, dest):
        self.prepared.add(dest)
        return 0.5

    def sync(self, src, dest, **kw):
        self.used.append((dest, dest in self.prepared, kw.get("final")))
        self.prepared.discard(dest)
        return FileDiskSync.sync(self, src, dest, **kw)

    def release_prepared(self):
        self.released += 1
        self.prepared.clear()


class Unusable(FileDiskSync):
    def sync(self, src, dest, **kw):
        raise AssertionError("the hook opened its own connection although the failback process served one")


def test_xend_path_the_hook_has_the_failback_process_send_over_connections_opened_before(tmp_path):
    import shutil
    import tempfile
    from xen_remus_ext.toolstack import delta_handoff
    short = tempfile.mkdtemp(prefix="xrjd")          # AF_UNIX paths are short
    try:
        world, guest = make_world(tmp_path)

        class Xend(FakeToolstack):
            def serve_final_delta(self, dom, host, send):
                return delta_handoff.Server(dom, host, send, base=short)

        # the hook: another process in xend, with only the journal and the socket
        world.migrate_hook = lambda dom, dst: delta.final_delta_for(
            dom, dst, disk_sync=Unusable(world),
            handoff=lambda d, h: delta_handoff.request(d, h, base=short))
        sync = PreparingSync(world)
        o = Orchestrator(Xend(world, "hostB", kind="xend"), FakeToolstack(world, "hostA", kind="xend"),
                         "vm1", "hostA", options={"local_host": "hostB"}, disk_sync=sync,
                         progress=lambda line: None)
        rec = o.run()
        assert rec["state"] == machine.DONE and rec["delta"]["by"] == "xend-hook"
        finals = [u for u in sync.used if u[2]]
        assert finals and all(was_prepared for _d, was_prepared, _f in finals), sync.used
        assert all(d.get("prepared") == 0.5 for d in rec["disks"])
        assert sync.released == 1
        assert not os.path.exists(delta_handoff.socket_path("vm1", "hostA", short))
        assert_home_and_protected(world, guest)
    finally:
        shutil.rmtree(short, ignore_errors=True)
