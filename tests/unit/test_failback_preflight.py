"""failback/preflight.py: direction planning and the config-file check (real files)."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.fakes.fake_toolstack import FileDiskSync, remus_config
from tests.unit.failback_world import PATH, make_world, orch
from xen_remus_ext.errors import FailbackError
from xen_remus_ext.failback import machine, preflight

CFG = """# web1 as xm reads it
name = "web1"
memory = 256
disk = [ 'tap2:remus:hostB:9000|aio:/img/vm1.img,xvda,w' ]
"""

COMPUTED = """name = "web1"
memory = 256
peer = "hostB"
disk = [ 'tap2:remus:' + peer + ':9000|aio:/img/vm1.img,xvda,w' ]
"""


def test_plan_direction_rewrites_only_other_hosts():
    cfg = remus_config("vm1", backup="10.0.0.2")
    same, changed = preflight.plan_direction(cfg, "hostB", aliases=("10.0.0.2",))
    assert same is cfg and changed == []
    new, changed = preflight.plan_direction(cfg, "hostA")
    assert changed == ["xvda"]
    assert new.disks[0].uname == "tap2:remus:hostA:9000|aio:/img/vm1.img"
    assert new.disks[0].remus.host == "hostA" and new.disks[0].remus.port == 9000


def test_plan_direction_endpoint_aliases_for_a_shared_address():
    # hosts sharing 127.0.0.1 (the simulator without namespaces) are named by
    # ADDRESS:PORT: the address alone must not count as the backup
    cfg = remus_config("vm1", backup="127.0.0.1")           # port 9000: B's listener
    same, changed = preflight.plan_direction(cfg, "B", aliases=("127.0.0.1:9000",))
    assert same is cfg and changed == []
    new, changed = preflight.plan_direction(cfg, "A", aliases=("127.0.0.1:9100",))
    assert changed == ["xvda"] and new.disks[0].uname == "tap2:remus:A:9000|aio:/img/vm1.img"


def test_plan_direction_refuses_a_uname_it_cannot_rewrite():
    cfg = remus_config("vm1", backup="hostB")
    d = cfg.disks[0]
    odd = cfg._replace(disks=(d._replace(uname="tap2:remus:elsewhere|aio:/x"),))
    with pytest.raises(FailbackError):
        preflight.plan_direction(odd, "hostA")


@pytest.mark.parametrize("text,backup,ok,words", [
    (CFG, "hostB", True, "names hostB already"),
    (CFG, "hostA", True, "reverses cleanly"),
    (COMPUTED, "hostA", False, "computed by the file"),
    ("disk = [ 'phy:/dev/sdb,xvda,w' ]\n", "hostA", True, "names hostA already"),
])
def test_config_file_check(tmp_path, text, backup, ok, words):
    path = tmp_path / "web1.cfg"
    path.write_text(u"%s" % text)
    before = path.read_bytes()
    name, got_ok, detail = preflight.check_config_file(str(path), backup)
    assert name == "config-file" and got_ok is ok and words in detail, detail
    assert path.read_bytes() == before          # a check changes nothing


def test_reverse_only_preflight_checks_the_config_file(tmp_path):
    world, _g = make_world(tmp_path, guest=False)
    bad = tmp_path / "computed.cfg"
    bad.write_text(u"%s" % COMPUTED)
    with pytest.raises(FailbackError) as exc:
        orch(world, mode=machine.REVERSE, config_file=str(bad)).run()
    assert "config-file" not in str(exc.value) and "computed by the file" in str(exc.value)
    good = tmp_path / "web1.cfg"
    good.write_text(u"%s" % CFG)
    state, _lines, checks, _facts = orch(world, mode=machine.REVERSE, config_file=str(good)).dry_run()
    assert [c.ok for c in checks if c.name == "config-file"] == [True]


@pytest.mark.parametrize("version,ok", [("4.4.4", False), ("4.7.6", False), ("4.8.0", True), ("4.11.4", True),
                                        ("4.18.2-pre", True)])
def test_xl_needs_migrate_p(version, ok):
    from xen_remus_ext.toolstack.xl import XlToolstack

    class Info(object):
        def run(self, argv, input=None, timeout=None, env=None):
            assert argv == ["xl", "info"], argv
            return 0, ("host : b\nxen_version : %s\nfree_memory : 2048\n" % version).encode(), b""

    lacks = XlToolstack(Info()).check_migrate_paused()
    assert (lacks is None) is ok and (ok or "4.8.0" in lacks)


def test_preflight_refuses_a_toolstack_that_cannot_migrate_paused(tmp_path):
    from tests.fakes.fake_toolstack import FakeToolstack

    class Old(FakeToolstack):
        def check_migrate_paused(self):
            return "xl on Xen 4.7: expected 4.8.0 or later for `xl migrate -p`"

    world, _g = make_world(tmp_path, guest=False)
    o = orch(world)
    o.ts = Old(world, "hostB")
    _state, _lines, checks, _facts = o.dry_run()
    got = [c for c in checks if c.name == "migrate-paused"][0]
    assert not got.ok and "4.8.0" in got.detail and "--reverse-only" in got.detail


# -- a held Remus backup copy of the domain on the failback's target ---------------

def _held_copy_on_a(world, broken=True, path=PATH):
    d = world.create("hostA", remus_config("vm1", backup="hostA", path=path), state="paused", remus_backup=True)
    d.broken = broken
    return d


def test_a_stale_held_copy_on_the_target_is_discarded_then_the_failback_runs(tmp_path):
    from tests.unit.failback_world import assert_home_and_protected
    world, guest = make_world(tmp_path)
    _held_copy_on_a(world)
    o = orch(world)
    rec = o.run()
    assert rec["state"] == machine.DONE
    assert "discard vm1@hostA" in world.log
    assert world.log.index("discard vm1@hostA") < min(i for i, w in enumerate(world.log) if w.startswith("migrate"))
    checks = dict((c["name"], c) for c in rec["checks"])
    assert checks["peer-free"]["ok"] and "held Remus backup copy" in checks["peer-free"]["detail"]
    assert checks["stale-backup"]["ok"] and "ancestors of ours" in checks["stale-backup"]["detail"]
    assert any(h[1] == "discarded" and h[3] == "hostA" for h in rec["history"])
    assert any("discarding the stale held Remus backup copy vm1 on hostA" in line for line in o.lines)
    assert_home_and_protected(world, guest)


def test_a_copy_still_receiving_on_the_target_is_refused_and_kept(tmp_path):
    world, _guest = make_world(tmp_path, guest=False)
    held = _held_copy_on_a(world, broken=False)
    with pytest.raises(FailbackError) as exc:
        orch(world).run()
    msg = str(exc.value)
    assert exc.value.step == "preflight"
    assert "vm1" in msg and "hostA" in msg and "still receiving checkpoints" in msg
    assert world.hosts["hostA"]["vm1"] is held and world.effects == 0
    assert world.where("vm1") == ["hostB"]


@pytest.mark.parametrize("relation", ["split-brain", "target-ahead"])
def test_a_held_copy_whose_disk_is_not_older_is_refused_and_kept(tmp_path, relation):
    world, _guest = make_world(tmp_path, guest=False)
    held = _held_copy_on_a(world)
    sync = FileDiskSync(world)
    sync.relations[world.disk_file("hostA", PATH)] = relation
    with pytest.raises(FailbackError) as exc:
        orch(world, sync=sync).run()
    msg = str(exc.value)
    assert "stale-backup" not in msg   # details, not check names, are what the operator reads
    assert "held Remus backup copy vm1" in msg and "on hostA" in msg and "not discarding it" in msg
    assert world.hosts["hostA"]["vm1"] is held and held.broken and world.effects == 0


def test_the_loser_named_by_discard_peer_lets_the_held_copy_go(tmp_path):
    world, _guest = make_world(tmp_path, guest=False)
    _held_copy_on_a(world)
    sync = FileDiskSync(world)
    sync.relations[world.disk_file("hostA", PATH)] = "split-brain"
    rec = orch(world, sync=sync, discard_peer=True).run()
    assert rec["state"] == machine.DONE and "discard vm1@hostA" in world.log
    assert "named the peer's copies the loser" in dict((c["name"], c["detail"]) for c in rec["checks"])["stale-backup"]


def test_a_held_copy_of_other_disks_is_refused_and_kept(tmp_path):
    world, _guest = make_world(tmp_path, guest=False)
    held = _held_copy_on_a(world, path="/img/other.img")
    with pytest.raises(FailbackError) as exc:
        orch(world).run()
    msg = str(exc.value)
    assert "expected the same disks as vm1 here" in msg and "xvda=/img/other.img" in msg and "hostA" in msg
    assert world.hosts["hostA"]["vm1"] is held and world.effects == 0


def test_a_running_domain_of_that_name_on_the_target_is_still_refused(tmp_path):
    world, _guest = make_world(tmp_path, guest=False)
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    with pytest.raises(FailbackError) as exc:
        orch(world).run()
    assert "found it on the peer too (running)" in str(exc.value)
    assert world.effects == 0
