"""``xen-remus failback|resync-domain|status`` over the FakeToolstack.

The CLI's one seam (``open_site``: what ``--toolstack`` and its options
build through the composition root) is pointed at the stateful fakes; everything else
(argument parsing, the api, the orchestrator, JSON and exit codes) is the
real code, and disks are real files.
"""
from __future__ import absolute_import, division, print_function

import json

import pytest

from tests.fakes.fake_toolstack import FakeToolstack, FileDiskSync
from tests.unit.failback_world import PATH, make_world
from xen_remus_ext import wiring
from xen_remus_ext.cli import failback_cmd
from xen_remus_ext.cli import main as cli


@pytest.fixture
def world(tmp_path, monkeypatch):
    w, guest = make_world(tmp_path)
    sync = FileDiskSync(w)
    w.sync = sync
    w.guest = guest
    monkeypatch.setattr(failback_cmd, "open_site", lambda args, peer=True: wiring.Site(
        FakeToolstack(w, "hostB"), FakeToolstack(w, getattr(args, "host", None) or "hostA"), sync))
    return w


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_failback_json(world, capsys):
    rc, out, err = run(capsys, "failback", "vm1", "hostA", "--local-host", "hostB", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert res["result"] == "ok" and res["state"] == "done" and res["delta"]["sent"]
    assert world.where("vm1") == ["hostA"] and world.remus[("hostA", "vm1")] == "hostB"
    assert world.read_disk("hostA", PATH) == bytes(world.guest.expected)
    assert "vm1: protect ..." in err          # progress goes to stderr with --json


def test_split_brain_exit_1_json_error_no_traceback(world, capsys):
    world.sync.relations[world.disk_file("hostA", PATH)] = "split-brain"
    rc, out, err = run(capsys, "failback", "vm1", "hostA", "--local-host", "hostB", "--json")
    assert rc == 1
    res = json.loads(out)
    assert res["result"] == "error" and res["step"] == "preflight" and "split brain" in res["error"]
    assert err.count("split brain") == 1 and "Traceback" not in err
    assert err.splitlines()[-1].startswith("xen-remus: preflight refused")


def test_dry_run_prints_plan_and_failed_checks(world, capsys):
    world.free_memory["hostA"] = 64
    rc, out, _err = run(capsys, "failback", "vm1", "hostA", "--local-host", "hostB", "--dry-run")
    assert rc == 1
    assert "failback of vm1 toward hostA, from state new:" in out
    assert "  1. preflight" in out and "  6. unpause" in out
    assert "FAIL peer-memory" in out and "ok   generation:xvda" in out
    assert world.effects == 0


def test_status_after_failback_and_unknown_domain(world, capsys):
    run(capsys, "failback", "vm1", "hostA", "--local-host", "hostB")
    rc, out, _err = run(capsys, "status")
    assert rc == 0
    line = [ln for ln in out.splitlines() if ln.startswith("vm1")][0]
    # on hostB vm1 is now Remus' paused backup copy; the journal says done
    assert "failback to hostA: done" in line
    assert line.split()[3] == "backup"        # the Protected column: a backup copy, not a primary
    assert all("(backup copy)" in ln for ln in out.splitlines() if ln.startswith("    xvda"))
    rc, out, _err = run(capsys, "status", "vm1", "--json")
    rows = json.loads(out)["domains"]
    assert rows[0]["failback"]["state"] == "done" and rows[0]["failback"]["next"] == []
    rc, out, err = run(capsys, "status", "nosuch")
    assert rc == 1 and "nosuch" in err


def test_resync_domain_copies_every_remus_disk(world, capsys):
    world.on_effect = None
    rc, out, err = run(capsys, "resync-domain", "vm1", "hostA", "--json")
    assert rc == 0, err
    res = json.loads(out)
    assert [d["vdev"] for d in res["disks"]] == ["xvda"] and res["disks"][0]["relation"] == "target-behind"
    assert world.read_disk("hostA", PATH) == world.read_disk("hostB", PATH)


def test_option_conflicts_and_missing_agent(world, capsys, monkeypatch):
    rc, _out, err = run(capsys, "failback", "vm1", "hostA", "--resume", "--abort")
    assert rc == 1 and "exclude each other" in err
    monkeypatch.undo()
    rc, _out, err = run(capsys, "failback", "vm1", "hostA", "--toolstack", "sim")
    assert rc == 1 and "--agent" in err
