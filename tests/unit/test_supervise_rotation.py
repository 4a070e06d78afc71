"""Generation rotation on real-toolstack hosts (failback/watch.py, the rule
``xen-remus supervise`` applies), over the toolstack double and real image
files with real generation records; the failback that follows uses the
real resync engine.

The cycle: protected A -> B; A dies; B resumes the domain (its supervisor
rotates B's copy); A comes back and the same guest is booted on A too (A's
supervisor rotates A's copy): failback from B toward A is then refused as
split brain, both disks untouched, unless --discard-peer names A's copy the
loser.  Without any supervisor, failback rotates B's copy at its start and
says why in its journal.
"""
from __future__ import absolute_import, division, print_function

import logging

import pytest

from tests.fakes.fake_clock import FakeClock
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, remus_config
from xen_remus_ext.errors import FailbackError, ToolstackError
from xen_remus_ext.failback import journal, machine
from xen_remus_ext.resync.disksync import ResyncDiskSync
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.failback.watch import Watcher
from xen_remus_ext.resync import meta

PATH = "/img/vm1.img"
SIZE = 1 << 20


def protected_world(tmp_path):
    world = FakeWorld(tmp_path / "world")
    a = world.make_disk("hostA", PATH, SIZE, b"\x01")
    b = world.make_disk("hostB", PATH, SIZE, b"\x01")
    m = meta.ensure(a, SIZE, role="primary")
    meta.mark_synced(b, m, role="backup")
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    A, B = FakeToolstack(world, "hostA", kind="xl"), FakeToolstack(world, "hostB", kind="xl")
    A.remus_start("vm1", "hostB")
    return world, A, B, a, b, m


def fail_over(world):
    """A loses power: its domain and sender vanish; B's backup copy resumes."""
    world.remus.pop(("hostA", "vm1"), None)
    world.hosts["hostA"].clear()
    d = world.hosts["hostB"]["vm1"]
    d.remus_backup = False
    d.state = "running"


def write(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def test_protected_domain_never_rotates(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    wa, wb = Watcher(A, clock, grace=5), Watcher(B, clock, grace=5)
    for _ in range(10):
        assert wa.poll() == [] and wb.poll() == []
        clock.sleep(1)
    assert meta.load(a).current == meta.load(b).current == m.current


def test_backup_rotates_at_failover_after_grace(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    wb = Watcher(B, clock, grace=5)
    fail_over(world)
    assert wb.poll() == []                 # not yet: within the grace
    clock.sleep(6)
    got = wb.poll()
    assert [r["vdev"] for r in got] == ["xvda"]
    mb = meta.load(b)
    assert mb.bitmap == m.current and mb.current != m.current
    clock.sleep(60)
    assert wb.poll() == []                 # once per unprotected stretch
    assert meta.load(b) == mb


def test_primary_rotates_when_its_sender_exits(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    wa = Watcher(A, clock, grace=2)
    wa.poll()
    A.remus_stop("vm1")                    # the backup died; the domain runs on alone
    wa.poll()
    clock.sleep(3)
    assert len(wa.poll()) == 1
    assert meta.load(a).bitmap == m.current


def test_no_rotation_while_a_journaled_operation_runs(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    wa = Watcher(A, clock, grace=1)
    A.remus_stop("vm1")
    rec = journal.new_record("vm1", "hostB", machine.PROTECT_MODE, now=clock.now())
    rec["state"] = machine.PRECOPIED
    journal.save(rec)
    wa.poll()
    clock.sleep(5)
    assert wa.poll() == [] and meta.load(a).current == m.current


def failback(world, clock, **opts):
    options = {"local_host": "hostB", "settle_timeout": 1}
    options.update(opts)
    return Orchestrator(FakeToolstack(world, "hostB", kind="xl"), FakeToolstack(world, "hostA", kind="xl"),
                        "vm1", "hostA", mode=machine.REVERSE, options=options, disk_sync=ResyncDiskSync(),
                        progress=lambda line: None, clock=clock)


def test_split_brain_after_booting_the_guest_on_the_old_primary_too(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    wb = Watcher(B, clock, grace=5)
    fail_over(world)
    wb.poll()
    clock.sleep(6)
    wb.poll()
    write(b, 0, b"B" * 4096)                      # B works on
    # A comes back; the same guest is started there too, and writes
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    wa = Watcher(A, clock, grace=5)
    wa.poll()
    clock.sleep(6)
    assert len(wa.poll()) == 1
    write(a, 8192, b"A" * 4096)
    A.destroy("vm1")
    ma, mb = meta.load(a), meta.load(b)
    assert ma.current != mb.current and ma.bitmap == mb.bitmap == m.current
    assert meta.compare(mb, ma) == meta.SPLIT_BRAIN
    bytes_a, bytes_b = open(a, "rb").read(), open(b, "rb").read()
    with pytest.raises(FailbackError) as ei:
        failback(world, clock).run()
    assert "split" in str(ei.value) and "--discard-peer" in str(ei.value)
    assert open(a, "rb").read() == bytes_a and open(b, "rb").read() == bytes_b
    assert (meta.load(a), meta.load(b)) == (ma, mb)
    # named the loser: A's copy takes B's data
    journal.remove("vm1") if hasattr(journal, "remove") else None
    rec = failback(world, clock, discard_peer=True).run(resume=False)
    assert rec["state"] == machine.DONE
    assert open(a, "rb").read() == open(b, "rb").read()


def test_failback_rotates_a_missed_failover_and_says_why(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    fail_over(world)                                 # no supervisor on B
    write(b, 0, b"B" * 4096)
    rec = failback(world, clock).run()
    assert rec["state"] == machine.DONE
    notes = [h for h in rec["history"] if "rotated" in str(h)]
    assert notes and "not rotated when" in str(notes[0])
    assert open(a, "rb").read() == open(b, "rb").read()
    # the rotated generation is what both copies carry now
    assert meta.load(a).current == meta.load(b).current != m.current


def test_cli_supervise_once_reports_rotations(tmp_path, capsys):
    """``xen-remus supervise --once --grace 0`` over the simulator's agent
    protocol is not needed here: the watcher is the unit; the command's
    argument checks are."""
    from xen_remus_ext.cli import main as cli
    assert cli.main(["supervise", "--once", "--interval", "0", "--toolstack", "xend"]) == 1
    assert "--interval > 0" in capsys.readouterr().err


def _proc(tmp_path, *cmdlines):
    root = tmp_path / "proc"
    for i, argv in enumerate(cmdlines):
        d = root / str(100 + i)
        d.mkdir(parents=True)
        with open(str(d / "cmdline"), "wb") as f:
            f.write(b"\0".join(a.encode() for a in argv) + b"\0")
    (root / "self").mkdir(parents=True, exist_ok=True)
    return str(root)


def test_sender_process_here_sees_xl_remus_run_over_ssh(tmp_path):
    from xen_remus_ext.toolstack.processes import sender_process_here
    root = _proc(tmp_path, ["bash", "-c", "xl remus -n -d -F vm1 hostb"], ["ssh", "hostb", "xl", "remus", "vm1"],
                 ["/usr/bin/python3", "/usr/local/bin/xen-remus", "protect", "vm1", "hostb"])
    assert not sender_process_here("vm1", proc=root)
    root2 = _proc(tmp_path / "2", ["xl", "remus", "-n", "-d", "-F", "vm1", "hostb"])
    assert sender_process_here("vm1", proc=root2) and not sender_process_here("vm2", proc=root2)
    root3 = _proc(tmp_path / "3", ["/usr/bin/python", "/usr/lib/xen/bin/remus", "-i", "40", "vm1", "hostb"])
    assert sender_process_here("vm1", proc=root3)


def test_a_sender_the_toolstack_did_not_start_counts(tmp_path):
    world, A, B, a, b, m = protected_world(tmp_path)
    clock = FakeClock(tick=0)
    A.remus_stop("vm1")
    wa = Watcher(A, clock, grace=1, sender_here=lambda name: name == "vm1")
    wa.poll()
    clock.sleep(5)
    assert wa.poll() == [] and meta.load(a).current == m.current


class AwayToolstack(object):
    """A toolstack that does not answer until ``back_at`` (clock time), then
    answers with no domains."""
    kind = "xend"

    def __init__(self, clock, back_at):
        self.clock = clock
        self.back_at = back_at
        self.looks = []

    def list_domains(self):
        self.looks.append(self.clock.t)
        if self.clock.t < self.back_at:
            raise ToolstackError("xend at httpu:///var/run/xend/xmlrpc.sock: cannot call "
                                 "xend.domains_with_state: No such file (is xend running?)")
        return []


def test_supervisor_backs_off_while_the_toolstack_is_away_and_says_so_once(caplog):
    """No toolstack: looks at 1, 2, 4 ... 60 s apart, one warning naming what
    it waits for, one line when the toolstack answers again, then looks every
    interval as before; it still notices stop() every interval."""
    clock = FakeClock(tick=0)
    ts = AwayToolstack(clock, back_at=1000.0 + 300)
    stop_at = 1000.0 + 500
    caplog.set_level(logging.INFO, logger="xen_remus_ext.failback.watch")
    Watcher(ts, clock, grace=5).run(interval=1.0, stop=lambda: clock.t >= stop_at)
    gaps = [b - a for a, b in zip(ts.looks, ts.looks[1:])]
    away = [g for a, g in zip(ts.looks, gaps) if a < ts.back_at]
    assert away[:7] == [1, 2, 4, 8, 16, 32, 60] and set(away[7:]) <= set([60]), away
    back = [g for a, g in zip(ts.looks, gaps) if a >= ts.back_at]
    assert back and set(back) == set([1.0]), back
    assert clock.t == stop_at                       # stop() seen within an interval, even mid back-off
    lines = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == "WARNING" and "waiting for the xend toolstack" in lines[0][1] \
        and "is xend running?" in lines[0][1] and "60 s" in lines[0][1]
    assert lines[1][0] == "INFO" and "xend toolstack answers again" in lines[1][1]


def test_supervisor_logs_a_changed_toolstack_error_once(caplog):
    clock = FakeClock(tick=0)
    ts = AwayToolstack(clock, back_at=1000.0 + 100)
    errors = iter(["xend: no such socket"] * 3 + ["xend: permission denied"] * 100)

    def list_domains():
        ts.looks.append(clock.t)
        if clock.t < ts.back_at:
            raise ToolstackError(next(errors))
        return []
    ts.list_domains = list_domains
    caplog.set_level(logging.INFO, logger="xen_remus_ext.failback.watch")
    Watcher(ts, clock, grace=5).run(interval=1.0, stop=lambda: clock.t >= 1000.0 + 200)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3, lines
    assert "no such socket" in lines[0] and "permission denied" in lines[1] and "answers again" in lines[2]
