"""The replicated disk of ``protect``/``failback`` on xl is journaled and
found by default: a disk that ``xen-remus replicate serve`` serves on this
host is replicated without ``--replicate-disk`` and without accepting a
loss; the choice is kept in the journal, so a resumed run (killed after any
effect) starts Remus with the same relay even when nothing is given again,
and a resume whose command line contradicts it is refused."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.cli_util import usage
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, Killed, remus_config
from tests.fakes.fake_clock import FakeClock as Clock
from tests.unit.test_protect_orchestrator import SeedingSync
from xen_remus_ext import model
from xen_remus_ext.cli import app, failback_cmd
from xen_remus_ext.errors import FailbackError, JournalError
from xen_remus_ext.failback import api, journal, machine
from xen_remus_ext.failback.orchestrator import Orchestrator

PATH = "/img/vm1.img"
SIZE = 64 * 1024
CTL = "/run/xen-remus/replicate/vm1.img.ctl"
FOUND = model.ReplicatedDisk("xvda", CTL, 3.0)


def make_world(tmp_path, served=True):
    world = FakeWorld(tmp_path / "world")
    world.make_disk("hostA", PATH, SIZE, b"\x05")
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    if served:
        world.served[("hostA", "vm1")] = {"xvda": CTL}
    return world


def protect(world, **opts):
    options = {"local_host": "hostA", "settle_timeout": 1}
    options.update(opts)
    lines = []
    o = Orchestrator(FakeToolstack(world, "hostA", kind="xl"), FakeToolstack(world, "hostB", kind="xl"), "vm1",
                     "hostB", mode=machine.PROTECT_MODE, options=options, disk_sync=SeedingSync(world),
                     progress=lines.append, clock=Clock())
    o.lines = lines
    return o


def test_a_served_disk_is_replicated_by_default_and_journaled(tmp_path):
    world = make_world(tmp_path)
    o = protect(world)
    rec = o.run()
    assert rec["state"] == machine.DONE
    assert world.replicated[("hostA", "vm1")] == FOUND
    assert rec["options"]["replicate"] == FOUND.to_dict()
    checks = dict((c["name"], c) for c in rec["checks"])
    assert checks["replicate-disk:xvda"]["ok"] and checks["disk-replication:xvda"]["ok"]
    assert any("served by xen-remus replicate serve (control %s)" % CTL in ln for ln in o.lines)
    # status (and its --json) carry it
    row = [r for r in api.status(FakeToolstack(world, "hostA", kind="xl")) if r["name"] == "vm1"][0]
    assert row["failback"]["replicate"] == FOUND.to_dict()
    assert "failback xvda: replicated by xen-remus replicate, control %s, timeout 3 s" % CTL \
        in failback_cmd.format_status([row])


def test_the_found_disk_takes_the_replicate_timeout_and_a_named_one_wins(tmp_path):
    world = make_world(tmp_path)
    protect(world, replicate_timeout=12).run()
    assert world.replicated[("hostA", "vm1")] == model.ReplicatedDisk("xvda", CTL, 12)
    world = make_world(tmp_path / "named")
    named = model.ReplicatedDisk("xvda", "/run/elsewhere.ctl", 5)
    protect(world, replicate=named, disk=False).run()
    assert world.replicated[("hostA", "vm1")] == named


def test_not_found_when_told_not_to_or_on_a_toolstack_without_the_relay(tmp_path):
    world = make_world(tmp_path)
    with pytest.raises(FailbackError) as ei:
        protect(world, find_replicated=False, disk=False).run()
    assert "xvda: memory-only Remus (xl remus -d) does not replicate this disk" in str(ei.value)
    assert world.replicated == {} and ("hostA", "vm1") not in world.remus
    journal.remove("vm1")
    rec = protect(world, find_replicated=False, disk=False, accept_disk_loss=True).run()
    assert rec["state"] == machine.DONE and world.replicated == {}
    assert rec["options"]["replicate"] is None
    # a toolstack that cannot run the relay never looks (sim: the served map is ignored)
    world = make_world(tmp_path / "sim")
    o = Orchestrator(FakeToolstack(world, "hostA"), FakeToolstack(world, "hostB"), "vm1", "hostB",
                     mode=machine.PROTECT_MODE, options={"local_host": "hostA"}, disk_sync=SeedingSync(world),
                     progress=lambda line: None, clock=Clock())
    assert o.run()["state"] == machine.DONE and world.replicated == {}


def test_two_served_disks_are_refused_by_name(tmp_path):
    world = make_world(tmp_path)
    world.served[("hostA", "vm1")] = {"xvda": CTL, "xvdb": "/run/b.ctl"}
    with pytest.raises(FailbackError) as ei:
        protect(world).run()
    assert "disks xvda, xvdb are each served by xen-remus replicate serve, expected one" in str(ei.value)
    assert "--replicate-disk VDEV=CONTROL" in str(ei.value)
    assert journal.load("vm1") is None and world.remus == {}


def _killed_after_precopy(world, **opts):
    world.kill_at = None
    o = protect(world, **opts)
    real = o.step_pause

    def killed():
        raise Killed("killed before the pause")
    o.step_pause = killed
    with pytest.raises(Killed):
        o.run()
    o.step_pause = real
    rec = journal.load("vm1")
    assert rec["state"] == machine.PRECOPIED
    return rec


def test_a_resume_takes_the_journaled_disk_without_the_option(tmp_path):
    world = make_world(tmp_path)
    rec = _killed_after_precopy(world)
    assert rec["options"]["replicate"] == FOUND.to_dict()
    world.served.clear()              # nothing to find now: only the journal knows
    o = protect(world)
    assert o.run(resume=True)["state"] == machine.DONE
    assert world.replicated[("hostA", "vm1")] == FOUND
    assert any("resuming with disk xvda replicated through %s (timeout 3 s), as journaled" % CTL in ln
               for ln in o.lines)


@pytest.mark.parametrize("opts,says", [
    ({"replicate": model.ReplicatedDisk("xvdb", CTL), "disk": False},
     "journaled disk xvda replicated through %s (timeout 3 s); --replicate-disk xvdb=%s (timeout 3 s) "
     "contradicts it" % (CTL, CTL)),
    ({"replicate": model.ReplicatedDisk("xvda", CTL, 10), "disk": False}, "(timeout 10 s) contradicts it"),
    ({"find_replicated": False}, "journaled disk xvda replicated through %s (timeout 3 s); "
                                 "--no-replicate-disk contradicts it" % CTL),
])
def test_a_resume_that_contradicts_the_journal_is_refused(tmp_path, opts, says):
    world = make_world(tmp_path)
    _killed_after_precopy(world)
    before = journal.load("vm1")
    with pytest.raises(FailbackError) as ei:
        protect(world, **opts).run(resume=True)
    assert says in str(ei.value) and "resume without" in str(ei.value) and "--abort" in str(ei.value)
    assert journal.load("vm1") == before and world.remus == {}


def test_a_journal_without_a_replicated_disk_refuses_one_on_resume(tmp_path):
    world = make_world(tmp_path, served=False)
    _killed_after_precopy(world, disk=False, accept_disk_loss=True)
    with pytest.raises(FailbackError) as ei:
        protect(world, replicate=FOUND, disk=False).run(resume=True)
    assert "journaled no replicated disk; --replicate-disk xvda=%s (timeout 3 s) contradicts it" % CTL \
        in str(ei.value)
    world.served[("hostA", "vm1")] = {"xvda": CTL}     # served since: the journal's choice stands
    rec = protect(world, disk=False, accept_disk_loss=True).run(resume=True)
    assert rec["state"] == machine.DONE and world.replicated == {}


def test_killed_after_every_effect_a_rerun_replicates_the_journaled_disk(tmp_path, counted_journal):
    world = make_world(tmp_path / "clean")
    counted_journal["world"] = world
    protect(world).run()
    total = world.effects
    assert total > 15
    for n in range(1, total + 1):
        world = make_world(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            protect(world).run()
        rec = journal.load("vm1")
        unfinished = rec is not None and rec["state"] not in machine.TERMINAL
        if unfinished:
            world.served.clear()      # the rerun must take the disk from the journal
        rec = protect(world).run(resume=unfinished and n % 2 == 0)
        counted_journal["world"] = None
        assert rec["state"] == machine.DONE, n
        assert world.replicated[("hostA", "vm1")] == FOUND, n
        assert world.remus[("hostA", "vm1")] == "hostB"
        assert world.read_disk("hostB", PATH) == world.read_disk("hostA", PATH), n


def test_the_journal_checks_the_replicated_disk_it_holds(tmp_path):
    world = make_world(tmp_path)
    rec = _killed_after_precopy(world)
    for bad, says in (({"vdev": "xvda"}, "expected the fields vdev, control and timeout, got vdev"),
                      ({"vdev": "xvda", "control": "rel.ctl", "timeout": 3}, "expected an absolute control"),
                      ("xvda", "expected a replicated disk")):
        rec["options"]["replicate"] = bad
        with pytest.raises(JournalError) as ei:
            journal.check_record(rec, "vm1.json")
        assert str(ei.value).startswith("vm1.json: options: ") and says in str(ei.value)


def test_cli_no_replicate_disk_and_the_timeout_reach_the_options(capsys):
    opts = failback_cmd._options(app.build_parser().parse_args(["protect", "vm1", "hostb", "--no-replicate-disk"]))
    assert opts["find_replicated"] is False and "replicate" not in opts
    opts = failback_cmd._options(app.build_parser().parse_args(
        ["failback", "vm1", "hosta", "--replicate-timeout", "8"]))
    assert opts["replicate_timeout"] == 8.0 and "find_replicated" not in opts
    err = usage(["protect", "vm1", "hostb", "--no-replicate-disk", "--replicate-disk", "xvda=" + CTL], capsys)
    assert "not allowed with argument" in err


def test_preflight_checks_both_hosts_serve_the_replicated_device(tmp_path):
    world = make_world(tmp_path)
    mine = {"device": PATH, "image": "/srv/vm1.img", "control": CTL}
    world.served_devices = {"hostA": [mine], "hostB": [mine]}
    rec = protect(world).run()
    checks = dict((c["name"], c) for c in rec["checks"])
    assert checks["replicate-served:xvda@here"]["ok"] and checks["replicate-served:xvda@hostB"]["ok"]
    assert checks["replicate-served:xvda@hostB"]["detail"] == "hostB serves /srv/vm1.img on %s (control %s)" % (
        PATH, CTL)
    # the backup serves another control socket: refused before anything changed, naming what it found
    world = make_world(tmp_path / "other")
    world.served_devices = {"hostA": [mine], "hostB": [dict(mine, control="/run/other.ctl")]}
    with pytest.raises(FailbackError) as ei:
        protect(world).run()
    msg = str(ei.value)
    assert ("xvda: expected hostB to serve its copy of the disk on %s with control socket %s (xen-remus "
            "replicate attach IMAGE --device %s there), found: /srv/vm1.img on %s (control /run/other.ctl)"
            % (PATH, CTL, PATH, PATH)) in msg
    assert world.remus == {} and not world.hosts["hostB"]
    world.served_devices["hostB"] = []
    journal.remove("vm1")
    with pytest.raises(FailbackError, match="expected hostB to serve its copy .*found: none"):
        protect(world).run()


def test_a_peer_that_cannot_say_what_it_serves_is_refused(tmp_path):
    from xen_remus_ext.errors import ReplicationError
    world = make_world(tmp_path)

    class Mute(FakeToolstack):
        def served_devices(self):
            raise ReplicationError("ssh hostB xen-remus replicate list --json: exit 2: invalid choice: 'list'")
    o = Orchestrator(FakeToolstack(world, "hostA", kind="xl"), Mute(world, "hostB", kind="xl"), "vm1", "hostB",
                     mode=machine.PROTECT_MODE, options={"local_host": "hostA"}, disk_sync=SeedingSync(world),
                     progress=lambda line: None, clock=Clock())
    with pytest.raises(FailbackError) as ei:
        o.run()
    assert "xvda: cannot ask hostB which disks xen-remus replicate serve serves: ssh hostB xen-remus " \
           "replicate list --json: exit 2: invalid choice: 'list'" in str(ei.value)


def test_failback_killed_after_every_effect_replicates_the_disk_found_before_the_kill(tmp_path, counted_journal):
    """Failback: the disk is found served on B (the domain runs there), the
    domain goes home to A, and Remus starts from A with the relay on A's
    server at the same control socket; a run killed anywhere and rerun
    (served map gone, so only the journal can say) converges the same way."""
    from tests.unit import test_failback_orchestrator as F
    served = {"device": PATH, "image": "/srv/vm1.img", "control": CTL}

    def world_at(where):
        world, guest = F.make_world(where)
        world.served[("hostB", "vm1")] = {"xvda": CTL}
        world.served_devices = {"hostA": [served], "hostB": [served]}
        return world, guest

    def failback(world):
        return Orchestrator(FakeToolstack(world, "hostB", kind="xl"), FakeToolstack(world, "hostA", kind="xl"),
                            "vm1", "hostA", mode=machine.FAILBACK, options={"local_host": "hostB"},
                            disk_sync=F.FileDiskSync(world), progress=lambda line: None, clock=Clock())
    world, _ = world_at(tmp_path / "count")
    counted_journal["world"] = world
    world.on_effect = None
    assert failback(world).run()["state"] == machine.DONE
    assert world.replicated[("hostA", "vm1")] == FOUND
    total = world.effects
    for n in range(1, total + 1):
        world, guest = world_at(tmp_path / ("k%d" % n))
        counted_journal["world"] = world
        world.kill_at = n
        with pytest.raises(Killed):
            failback(world).run()
        rec = journal.load("vm1")
        unfinished = rec is not None and rec["state"] not in machine.TERMINAL
        if unfinished:
            world.served.clear()
        rec = failback(world).run(resume=unfinished and n % 2 == 0)
        counted_journal["world"] = None
        assert rec["state"] == machine.DONE, n
        assert world.replicated[("hostA", "vm1")] == FOUND, n
        F.assert_home_and_protected(world, guest)
