"""``protect``/``failback --replicate-disk VDEV=CONTROL`` on xl: Remus runs
memory-only (``xl remus -d``) with ``xen-remus replicate relay`` as its
transport, which carries that disk checkpoint by checkpoint; preflight lets
that disk through without ``--lose-disk-writes-at-failover``, and only a
toolstack that can start the relay is accepted."""
from __future__ import absolute_import, division, print_function

import shlex

import pytest

from tests.cli_util import usage
from tests.fakes.fake_toolstack import FakeToolstack, FakeWorld, FileDiskSync, remus_config
from xen_remus_ext import model
from xen_remus_ext.cli import app
from xen_remus_ext.cli import failback_cmd
from xen_remus_ext.errors import FailbackError, ToolstackError, ValidationError
from xen_remus_ext.failback import machine
from xen_remus_ext.failback.options import FailbackOptions
from xen_remus_ext.failback.orchestrator import Orchestrator
from xen_remus_ext.toolstack.xl import XlToolstack

PATH = "/img/vm1.img"
CTL = "/run/xrl/vm1.ctl"


def test_replicated_disk_values_are_checked():
    rep = model.ReplicatedDisk("xvda", CTL, 10)
    assert rep.timeout == 10.0 and rep.to_dict() == {"vdev": "xvda", "control": CTL, "timeout": 10.0}
    for bad in (("", CTL), ("xvda", "run/vm1.ctl"), ("xvda", CTL, -1), ("xvda", CTL, True), ("xvda", CTL, 1e9)):
        with pytest.raises(ValidationError, match="replicated disk"):
            model.ReplicatedDisk(*bad)
    with pytest.raises(ValidationError, match="memory-only Remus"):
        FailbackOptions(replicate=rep)                     # disk=True: libxl would checkpoint the disk itself
    assert FailbackOptions(replicate=rep.to_dict(), disk=False).replicate == rep
    held = FailbackOptions(replicate=rep, disk=False, hold_backup=True)     # the relay's backup end holds
    assert held.hold_backup and held.replicate == rep
    assert FailbackOptions(replicate=rep, disk=False).journaled()["replicate"] == rep.to_dict()
    assert FailbackOptions().journaled()["replicate"] is None
    with pytest.raises(ValidationError, match="option replicate: expected the fields vdev, control and timeout"):
        FailbackOptions(replicate={"vdev": "xvda", "control": CTL, "size": 1}, disk=False)
    with pytest.raises(ValidationError, match="option replicate_timeout: expected seconds from 0.5 to 3600"):
        FailbackOptions(replicate_timeout=0.1)


def test_xl_remus_runs_the_relay_in_place_of_ssh():
    xl = XlToolstack(runner=None, xl=["xl"], remus_ssh="ssh -p 2222")
    argv = xl.remus_argv("guest", "hostb", interval_ms=100, net=False,
                         replicate=model.ReplicatedDisk("xvda", "/run/my disk.ctl", 10))
    assert argv[:7] == ["xl", "remus", "-i", "100", "-n", "-d", "-F"]   # -d although disk=True was the default
    assert argv[7] == "-s" and argv[9:] == ["guest", "hostb"]
    # xl runs "exec CMD HOST xl migrate-receive -r" through /bin/sh: what the relay then parses
    words = shlex.split("%s hostb xl migrate-receive -r" % argv[8])
    assert words[:3] == ["xen-remus", "replicate", "relay"]
    args = app.build_parser().parse_args(words[1:])
    assert (args.control, args.timeout, args.ssh, args.host, args.receiver) == (
        "/run/my disk.ctl", 10.0, "ssh -p 2222", "hostb", ["xl", "migrate-receive", "-r"])
    assert args.backup_disk is None     # the relay asks the disk server for the path it serves
    plain = XlToolstack(runner=None, xl=["xl"]).remus_argv("guest", "hostb", disk=False,
                                                          replicate=model.ReplicatedDisk("xvda", CTL))
    args = app.build_parser().parse_args(shlex.split(plain[plain.index("-s") + 1])[1:] + ["hostb", "xl"])
    assert args.ssh is None or args.ssh == "ssh"
    assert args.timeout == 3.0
    # run on the peer over ssh (failback): the peer's shell reads the words once more
    remote = XlToolstack(runner=None, xl=["xl"], host="hosta").remus_argv(
        "guest", "hostb", disk=False, replicate=model.ReplicatedDisk("xvda", CTL))
    assert shlex.split(remote[remote.index("-s") + 1]) == [plain[plain.index("-s") + 1]]
    # a held backup: the relay's backup end runs xl's receiver behind `xen-remus hold receive`
    held = xl.remus_argv("guest", "hostb", hold=True, replicate=model.ReplicatedDisk("xvda", CTL))
    assert held[-2:] == ["guest", "hostb"] and held[held.index("-s") + 1] != ""
    args = app.build_parser().parse_args(
        shlex.split("%s hostb xl migrate-receive -r" % held[held.index("-s") + 1])[1:])
    assert (args.hold_domain, args.control, args.receiver) == ("guest", CTL, ["xl", "migrate-receive", "-r"])
    with pytest.raises(ToolstackError, match="blackhole backup has no copy to hold"):
        xl.remus_argv("guest", "hostb", hold=True, blackhole=True, replicate=model.ReplicatedDisk("xvda", CTL))


class _Sync(FileDiskSync):
    """FileDiskSync with the two calls protect adds (the backup's copy exists)."""

    def peer_state(self, dest):
        import os
        return {"exists": os.path.exists(dest), "size": os.path.getsize(dest) if os.path.exists(dest) else None,
                "meta": {"current": "0" * 16}}

    def create(self, dest, size):
        raise AssertionError("the copy exists")


def _protect(tmp_path, kind, rep, **opts):
    world = FakeWorld(tmp_path / "world")
    for h in ("hostA", "hostB"):
        world.make_disk(h, PATH, 1 << 16)
    world.create("hostA", remus_config("vm1", backup="hostB", path=PATH))
    options = {"disk": False, "local_host": "hostA", "discard_peer": True, "replicate": rep}
    options.update(opts)
    o = Orchestrator(FakeToolstack(world, "hostA", kind=kind), FakeToolstack(world, "hostB", kind=kind), "vm1",
                     "hostB", mode=machine.PROTECT_MODE, options=options, disk_sync=_Sync(world),
                     progress=lambda line: None)
    return world, o


def test_protect_starts_remus_with_the_replicated_disk_without_accepting_a_loss(tmp_path):
    rep = model.ReplicatedDisk("xvda", CTL, 10)
    world, o = _protect(tmp_path, "xl", rep)
    rec = o.run()
    assert rec["state"] == machine.DONE
    assert world.remus[("hostA", "vm1")] == "hostB" and world.replicated[("hostA", "vm1")] == rep
    checks = dict((c["name"], c) for c in rec["checks"])
    assert checks["replicate-disk:xvda"]["ok"] and CTL in checks["replicate-disk:xvda"]["detail"]
    assert checks["disk-replication:xvda"]["ok"] and "LOSES" not in checks["disk-replication:xvda"]["detail"]


@pytest.mark.parametrize("kind,vdev,why", [
    ("xend", "xvda", "the xend toolstack cannot replicate a disk with xen-remus replicate"),
    ("sim", "xvda", "the sim toolstack cannot replicate"),
    ("xl", "xvdz", "xvdz: expected it among the domain's writable disks (xvda)"),
])
def test_protect_refuses_a_replicated_disk_it_cannot_carry(tmp_path, kind, vdev, why):
    world, o = _protect(tmp_path, kind, model.ReplicatedDisk(vdev, CTL))
    with pytest.raises(FailbackError) as ei:
        o.run()
    assert why in str(ei.value)
    assert ("hostA", "vm1") not in world.remus and world.replicated == {}


def test_cli_turns_the_option_into_a_replicated_disk(capsys):
    args = app.build_parser().parse_args(
        ["protect", "vm1", "hostb", "--replicate-disk", "xvda=" + CTL, "--replicate-timeout", "10"])
    opts = failback_cmd._options(args)
    assert opts["disk"] is False and opts["replicate"] == model.ReplicatedDisk("xvda", CTL, 10.0)
    args = app.build_parser().parse_args(["failback", "vm1", "hosta", "--replicate-disk", "xvda=" + CTL])
    assert failback_cmd._options(args)["replicate"] == model.ReplicatedDisk("xvda", CTL, 3.0)
    assert "replicate" not in failback_cmd._options(app.build_parser().parse_args(["protect", "vm1", "hostb"]))
    for bad in ("xvda", "=" + CTL, "xvda=relative.ctl"):
        err = usage(["protect", "vm1", "hostb", "--replicate-disk", bad], capsys)
        assert "argument --replicate-disk: expected VDEV=CONTROL" in err and repr(bad) in err
    err = usage(["protect", "vm1", "hostb", "--replicate-disk", "xvda=" + CTL, "--replicate-timeout", "-1"], capsys)
    assert "argument --replicate-timeout: expected seconds from 0.5 to 3600, got '-1'" in err
