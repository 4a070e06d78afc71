"""The failback runner over the stateful FakeToolstack (tests/fakes/fake_toolstack.py).

The fake stands in for xend/xl on two hosts (docs/xen-facts.md: migrate moves
memory only; ``paused=True`` is ``xl migrate -p``; Remus leaves a paused copy
on the backup); the disks are real files and the guest really writes to them
between every two effects, so "no acknowledged write lost" is checked byte
for byte.  The kill test ends the run after EVERY effect and every journal
write (mid-step included) and reruns it: it must converge each time.
"""
from __future__ import absolute_import, division, print_function

import json
import os

import pytest

from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FileDiskSync, Killed, remus_config
from tests.unit.failback_world import PATH, assert_home_and_protected, killed_in_migration, make_world, orch
from xen_remus_ext.errors import FailbackError, ToolstackError
from xen_remus_ext.failback import api, journal, machine
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.ports import Toolstack

def test_clean_failback_brings_it_home_and_protects(tmp_path, counted_journal):
    world, guest = make_world(tmp_path)
    o = orch(world)
    rec = o.run()
    assert rec["state"] == machine.DONE
    assert_home_and_protected(world, guest)
    assert guest.acked > 5
    on_disk = journal.load("vm1")
    assert on_disk["state"] == machine.DONE and on_disk["delta"]["sent"]
    assert [c["name"] for c in on_disk["checks"]][:3] == ["domain-here", "unprotected", "peer-reachable"]
    # pass 1 compares, later passes and the final delta use the tracker
    kinds = [c[2] for c in o.disks.calls]
    assert kinds[0] == "checksum" and kinds[-1] == "tracked" and o.disks.calls[-1][3]
    assert "downtime" in rec and rec["downtime"] >= 0


def _clean_effect_count(tmp_path, counted_journal, mode=machine.FAILBACK):
    world, _g = make_world(tmp_path / "count")
    counted_journal["world"] = world
    world.on_effect = None
    orch(world, mode=mode).run()
    counted_journal["world"] = None
    return world.effects


def test_killed_after_every_effect_and_journal_write_converges(tmp_path, counted_journal):
    total = _clean_effect_count(tmp_path, counted_journal)
    assert total > 15
    seen = set()
    for n in range(1, total + 1):
        world, guest = make_world(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed) as exc:
            orch(world).run()
        seen.add(str(exc.value).split("(", 1)[1])
        rec = orch(world).run(resume=(n % 2 == 0))
        assert rec["state"] == machine.DONE, n
        counted_journal["world"] = None
        assert_home_and_protected(world, guest)
    # the kills landed inside every step, not only between them
    assert any(s.startswith("incoming") for s in seen)
    assert any(s.startswith("sync") and "final" in s for s in seen)
    assert any(s.startswith("journal precopied/migrate") for s in seen)


def test_killed_twice_converges(tmp_path, counted_journal):
    total = _clean_effect_count(tmp_path, counted_journal)
    for n in range(2, total, 5):
        world, guest = make_world(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            orch(world).run()
        world.kill_at = world.effects + 4
        try:
            orch(world).run()
        except Killed:
            pass
        assert orch(world).run()["state"] == machine.DONE
        counted_journal["world"] = None
        assert_home_and_protected(world, guest)


def test_mid_migration_then_migration_completes_or_fails(tmp_path):
    for outcome in ("complete", "fail"):
        world, guest = make_world(tmp_path / outcome)
        world.hold_migrations = True
        o = orch(world)
        with pytest.raises(FailbackError):
            o.run()   # migrate returned with the copy still incoming: final-delta refuses a live source
        assert journal.load("vm1")["state"] == machine.MIGRATED
        src = FakeToolstack(world, "hostB")
        if outcome == "complete":
            src.complete_migration("vm1", "hostA")
        else:
            src.fail_migration("vm1", "hostA")
        world.hold_migrations = False
        assert orch(world).run()["state"] == machine.DONE
        assert_home_and_protected(world, guest)


@pytest.mark.parametrize("relation", ["split-brain", "target-ahead", "unrelated"])
def test_split_brain_is_refused_and_nothing_moves(tmp_path, relation):
    world, _guest = make_world(tmp_path, guest=False)
    sync = FileDiskSync(world)
    sync.relations[world.disk_file("hostA", PATH)] = relation
    before = world.read_disk("hostA", PATH)
    with pytest.raises(FailbackError) as exc:
        orch(world, sync=sync).run()
    assert relation in str(exc.value) and exc.value.step == "preflight"
    if relation == "split-brain":
        assert "split brain" in str(exc.value)
    assert world.where("vm1") == ["hostB"] and world.read_disk("hostA", PATH) == before
    assert world.effects == 0 and sync.calls == []
    rec = journal.load("vm1")
    assert rec["state"] == machine.REFUSED and "preflight" in rec["error"]


def test_a_refused_failback_leaves_a_refused_journal_the_next_run_replaces(tmp_path):
    world, guest = make_world(tmp_path)
    world.free_memory["hostA"] = 100
    with pytest.raises(FailbackError, match="MiB free") as exc:
        orch(world).run()
    assert exc.value.step == "preflight" and world.effects == 0
    rec = journal.load("vm1")
    assert rec["state"] == machine.REFUSED and "MiB free" in rec["error"]
    assert [h[1] for h in rec["history"]][-2:] == ["failed", "state"]
    # status names it refused, with the reason, and nothing left to run
    row = api.status(FakeToolstack(world, "hostB"), "vm1")[0]
    assert row["failback"]["state"] == "refused" and "MiB free" in row["failback"]["error"]
    assert row["failback"]["next"] == []
    # nothing to resume or abort
    with pytest.raises(FailbackError, match="a run its preflight refused .*MiB free.*without --resume"):
        orch(world).run(resume=True)
    with pytest.raises(FailbackError, match="--abort: expected an unfinished failback journal, found it refused"):
        orch(world).abort()
    # another operation on the domain is not held up by it (no --abort), once
    # what the preflight refused is fixed
    world.free_memory["hostA"] = 4096
    world.on_effect = None
    assert orch(world, mode=machine.REVERSE).run()["state"] == machine.DONE
    assert journal.load("vm1")["mode"] == machine.REVERSE


def test_the_same_failback_runs_again_after_its_refusal_without_abort(tmp_path):
    world, guest = make_world(tmp_path)
    world.free_memory["hostA"] = 100
    with pytest.raises(FailbackError, match="MiB free"):
        orch(world).run()
    world.free_memory["hostA"] = 4096
    o = orch(world)
    assert o.run()["state"] == machine.DONE
    assert not any("resumed" in line or "continuing from" in line for line in o.lines), o.lines
    assert [h[1] for h in journal.load("vm1")["history"]].count("resumed") == 0
    assert_home_and_protected(world, guest)


def test_split_brain_overridden_by_naming_the_loser(tmp_path):
    world, guest = make_world(tmp_path)
    sync = FileDiskSync(world)
    sync.relations[world.disk_file("hostA", PATH)] = "split-brain"
    assert orch(world, sync=sync, discard_peer=True).run()["state"] == machine.DONE
    assert_home_and_protected(world, guest)


@pytest.mark.parametrize("breakage,words", [
    ("remus", "Remus already runs"),
    ("unreachable", "expected its toolstack to answer"),
    ("memory", "MiB free"),
    ("name", "on the peer too"),
    ("size", "expected the peer's copy to have"),
    ("absent", "found it on neither"),
])
def test_preflight_refusals(tmp_path, breakage, words):
    world, _g = make_world(tmp_path, guest=False)
    if breakage == "remus":
        world.remus[("hostB", "vm1")] = "hostA"
    elif breakage == "unreachable":
        world.unreachable.add("hostA")
    elif breakage == "memory":
        world.free_memory["hostA"] = 100
    elif breakage == "name":
        world.create("hostA", remus_config("vm1", backup="hostB", path=PATH), state="paused")
    elif breakage == "size":
        with open(world.disk_file("hostA", PATH), "ab") as f:
            f.write(b"\0" * 512)
    elif breakage == "absent":
        del world.hosts["hostB"]["vm1"]
    with pytest.raises(FailbackError) as exc:
        orch(world).run()
    assert words in str(exc.value)
    assert world.effects == 0


def test_dry_run_changes_nothing(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    o = orch(world)
    state, lines, checks, facts = o.dry_run()
    assert state == machine.NEW
    assert [ln.split()[1] for ln in lines] == ["preflight", "precopy", "migrate", "final-delta", "protect",
                                               "unpause"]
    assert all(c.ok for c in checks)
    assert facts["disks"][0]["dest"] == world.disk_file("hostA", PATH)
    assert world.effects == 0 and journal.load("vm1") is None


def test_abort_after_every_kill_point_reaches_a_safe_state(tmp_path, counted_journal):
    total = _clean_effect_count(tmp_path, counted_journal)
    outcomes = set()
    for n in range(1, total):
        world, guest = make_world(tmp_path / ("a%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            orch(world).run()
        before = journal.load("vm1")["state"]
        try:
            rec = orch(world).abort()
        except FailbackError as exc:     # killed after the last unpause: nothing left to abort
            assert "already done" in str(exc)
            rec = {"state": machine.DONE}
        counted_journal["world"] = None
        outcomes.add((before, rec["state"]))
        if rec["state"] == machine.DONE:     # protection already ran: abort finished it
            assert_home_and_protected(world, guest)
            continue
        assert rec["state"] == machine.ABORTED
        hosts = world.where("vm1")
        assert len(hosts) == 1 and world.hosts[hosts[0]]["vm1"].state == "running", n
        assert world.read_disk(hosts[0], PATH) == bytes(guest.expected), n
        assert not world.remus and sum(len(d) for d in world.hosts.values()) == 1
        if hosts == ["hostB"]:   # back where it started: a new failback may run
            assert orch(world).run()["state"] == machine.DONE
            assert_home_and_protected(world, guest)
    assert (machine.PRECOPIED, machine.ABORTED) in outcomes
    assert (machine.MIGRATED, machine.ABORTED) in outcomes
    assert (machine.PROTECTED, machine.DONE) in outcomes


def test_abort_without_journal_or_after_done(tmp_path):
    world, _g = make_world(tmp_path)
    with pytest.raises(FailbackError):
        orch(world).abort()
    orch(world).run()
    with pytest.raises(FailbackError):
        orch(world).abort()


def test_resume_without_journal_and_mismatched_journal(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    with pytest.raises(FailbackError) as exc:
        orch(world).run(resume=True)
    assert "--resume" in str(exc.value)
    world.kill_at = 2
    with pytest.raises(Killed):
        orch(world).run()
    with pytest.raises(FailbackError) as exc:
        orch(world, mode=machine.REVERSE).run()
    assert "abort" in str(exc.value)


def test_corrupt_journal_is_reported(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    path = journal.journal_path("vm1")
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(Exception) as exc:
        orch(world).run()
    assert "expected JSON" in str(exc.value)
    with open(path, "w") as f:
        json.dump({"version": journal.VERSION, "domain": "vm1", "host": "hostA", "mode": "failback", "state": "flying",
                   "disks": [], "delta": {}, "history": []}, f)
    with pytest.raises(Exception) as exc:
        orch(world).run()
    assert "flying" in str(exc.value)


def test_reverse_only_protects_from_here_toward_the_peer(tmp_path, counted_journal):
    world, guest = make_world(tmp_path)
    rec = orch(world, mode=machine.REVERSE).run()
    assert rec["state"] == machine.DONE and rec["reverse"] == ["xvda"]
    assert world.where("vm1") == ["hostB"] and world.hosts["hostB"]["vm1"].state == "running"
    assert world.remus[("hostB", "vm1")] == "hostA"
    assert world.hosts["hostB"]["vm1"].config.disks[0].remus.host == "hostA"
    assert world.read_disk("hostA", PATH) == bytes(guest.expected)
    for _ in range(5):
        guest()
    assert world.read_disk("hostA", PATH) == world.read_disk("hostB", PATH) == bytes(guest.expected)


def test_reverse_only_killed_everywhere_converges(tmp_path, counted_journal):
    total = _clean_effect_count(tmp_path, counted_journal, mode=machine.REVERSE)
    for n in range(1, total + 1):
        world, guest = make_world(tmp_path / ("r%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            orch(world, mode=machine.REVERSE).run()
        assert orch(world, mode=machine.REVERSE).run()["state"] == machine.DONE, n
        counted_journal["world"] = None
        assert world.remus[("hostB", "vm1")] == "hostA"
        assert world.hosts["hostB"]["vm1"].state == "running"
        assert world.read_disk("hostA", PATH) == bytes(guest.expected), n


def test_step_failure_is_journaled_and_rerun_succeeds(tmp_path):
    world, guest = make_world(tmp_path)
    world.unreachable.add("hostA")
    with pytest.raises(FailbackError):
        orch(world).run()
    world.unreachable.discard("hostA")
    world.kill_at = None
    o = orch(world)
    # fail the protect step once: the backup refuses
    real = FakeToolstack.remus_start
    calls = []

    def flaky(self, dom, host, **kw):
        calls.append(host)
        if len(calls) == 1:
            raise __import__("xen_remus_ext.errors", fromlist=["ToolstackError"]).ToolstackError("backup busy")
        return real(self, dom, host, **kw)
    FakeToolstack.remus_start = flaky
    try:
        with pytest.raises(FailbackError) as exc:
            o.run()
        assert exc.value.step == "protect" and exc.value.state == machine.DELTA_SENT
        rec = journal.load("vm1")
        assert rec["state"] == machine.DELTA_SENT and "backup busy" in rec["error"]
        assert orch(world).run()["state"] == machine.DONE
    finally:
        FakeToolstack.remus_start = real
    assert_home_and_protected(world, guest)


@pytest.mark.parametrize("outcome", ["complete", "fail"])
def test_resume_waits_for_a_migration_still_running_in_the_toolstack(tmp_path, counted_journal, outcome):
    """Killed inside migrate while the toolstack (xend, the xl child, the sim
    agent) carries on: the rerun must wait for it to end, not destroy the
    incoming copy under its feet."""
    world, guest = make_world(tmp_path)
    counted_journal["world"] = world
    killed_in_migration(world, orch(world).run)
    world.hold_migrations = False
    assert journal.load("vm1")["step"] == machine.MIGRATE
    o = orch(world)
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        o.clock.t += seconds
        if len(sleeps) == 3:      # the toolstack finishes on its own
            src = FakeToolstack(world, "hostB")
            (src.complete_migration if outcome == "complete" else src.fail_migration)("vm1", "hostA")
    o.clock.sleep = sleep
    assert o.run()["state"] == machine.DONE
    counted_journal["world"] = None
    assert len(sleeps) == 3
    assert not any(w.startswith("destroy") for w in world.log)
    assert_home_and_protected(world, guest)


def test_resume_gives_up_waiting_on_a_dead_migration(tmp_path):
    world, guest = make_world(tmp_path)
    killed_in_migration(world, orch(world).run)
    world.hold_migrations = False
    o = orch(world, settle_timeout=5.0)
    assert o.run()["state"] == machine.DONE
    assert o.clock.t >= 1005.0                          # it waited the whole settle time
    assert "destroy vm1@hostA" in world.log             # then dropped the copy that never ran
    assert_home_and_protected(world, guest)


def test_remus_ext_status_keys_follow_the_run(tmp_path):
    """The keys go where the domain runs: here while failing back, on the
    peer once home and protected (FakeXenStore: the in-memory double)."""
    from tests.fakes.fake_xenstore import FakeXenStore
    from xen_remus_ext import status_keys as xs_status
    world, guest = make_world(tmp_path)
    xs_b, xs_a = FakeXenStore(), FakeXenStore()
    seen = []
    real = xs_status.write_status

    def spy(store, domid, **fields):
        seen.append(("B" if store is xs_b else "A", fields["role"], fields["state"]))
        return real(store, domid, **fields)
    xs_status.write_status = spy
    try:
        o = Orchestrator(FakeToolstack(world, "hostB"), FakeToolstack(world, "hostA"), "vm1", "hostA",
                         options={"local_host": "hostB"}, disk_sync=FileDiskSync(world), clock=FakeClock(),
                         xenstore=xs_b, peer_xenstore=xs_a)
        assert o.run()["state"] == machine.DONE
    finally:
        xs_status.write_status = real
    assert seen[0] == ("B", "unprotected", "failing-back")
    assert ("A", "unprotected", "failing-back") in seen and seen[-1] == ("A", "primary", "protected")
    domid = world.hosts["hostA"]["vm1"].domid
    st = xs_status.read_status(xs_a, domid)
    assert (st.role, st.state) == ("primary", "protected")


def test_without_a_tracker_the_final_pass_compares_and_downtime_is_estimated(tmp_path):
    class Untracked(FakeToolstack):
        """A host with no dirty-block tracking: the port's defaults."""
        tracker_for = Toolstack.tracker_for
        tracks_writes = Toolstack.tracks_writes

    world, guest = make_world(tmp_path)
    lines = []
    o = Orchestrator(Untracked(world, "hostB"), FakeToolstack(world, "hostA"), "vm1", "hostA",
                     options={"local_host": "hostB"}, disk_sync=FileDiskSync(world), clock=FakeClock(),
                     progress=lines.append)
    rec = o.run()
    assert rec["state"] == machine.DONE
    assert [c[2] for c in o.disks.calls] == ["checksum", "checksum"]      # one pre-copy pass, then final
    assert any("estimated downtime" in ln for ln in lines), lines
    assert rec["disks"][0]["estimate"] >= 0
    assert_home_and_protected(world, guest)


def test_abort_names_the_journaled_host(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    world.kill_at = 3
    with pytest.raises(Killed):
        orch(world).run()
    other = Orchestrator(FakeToolstack(world, "hostB"), FakeToolstack(world, "hostB"), "vm1", "hostC",
                         options={"local_host": "hostB"}, disk_sync=FileDiskSync(world), clock=FakeClock())
    with pytest.raises(FailbackError) as exc:
        other.abort()
    assert "hostA" in str(exc.value) and "hostC" in str(exc.value)
    assert orch(world).abort()["state"] == machine.ABORTED


class RunningOnlyRemus(FakeToolstack):
    """A toolstack whose Remus sender refuses a paused domain, as xl's does
    (libxc's live pass fails on a paused PV guest's page tables).  There the
    disks are replicated outside the sender (DRBD) or not at all (memory-only
    Remus, refused unless the loss is named), so the checks below are the
    primary's: it runs at home with every acknowledged write, protected."""

    def remus_needs_running_domain(self):
        return True

    def remus_start(self, dom, host, **kw):
        if self._get(dom).state == "paused":
            raise ToolstackError("remus %s: Bad mfn for L1[380]: the domain is paused" % dom)
        return FakeToolstack.remus_start(self, dom, host, **kw)


def running_only_orch(world, mode=machine.FAILBACK, **opts):
    options = {"local_host": "hostB"}
    options.update(opts)
    o = Orchestrator(RunningOnlyRemus(world, "hostB"), RunningOnlyRemus(world, "hostA"), "vm1", "hostA",
                     mode=mode, options=options, disk_sync=FileDiskSync(world), progress=lambda _l: None,
                     clock=FakeClock())
    return o


@pytest.mark.parametrize("mode", [machine.FAILBACK, machine.REVERSE])
def test_remus_starts_on_a_running_domain_where_the_toolstack_needs_it(tmp_path, counted_journal, mode):
    world, guest = make_world(tmp_path)
    if mode == machine.REVERSE:
        world.hosts["hostB"]["vm1"].config = remus_config("vm1", backup="hostA", path=PATH)
    rec = running_only_orch(world, mode=mode).run()
    assert rec["state"] == machine.DONE
    assert rec["running_at"] is not None and rec["downtime"] >= 0
    if mode == machine.FAILBACK:
        assert_home_running_only(world, guest)


def assert_home_running_only(world, guest):
    assert world.where("vm1") == ["hostA"] and world.hosts["hostA"]["vm1"].state == "running"
    assert world.remus[("hostA", "vm1")] == "hostB"
    assert world.read_disk("hostA", PATH) == bytes(guest.expected)   # 0 acknowledged writes lost


def test_killed_anywhere_with_a_running_only_remus_converges(tmp_path, counted_journal):
    world, _g = make_world(tmp_path / "count")
    counted_journal["world"] = world
    world.on_effect = None
    running_only_orch(world).run()
    counted_journal["world"] = None
    total = world.effects
    for n in range(1, total + 1):
        world, guest = make_world(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            running_only_orch(world).run()
        rec = running_only_orch(world).run(resume=True)
        counted_journal["world"] = None
        assert rec["state"] == machine.DONE, n
        assert_home_running_only(world, guest)
