"""The external-migration-tool: xend's device-migrate steps.

xend itself cannot run here.  ``xend_device_migrate`` below stands in for
``DevController.migrate``/``recover_migrate`` (Xen 4.1.0/4.4.0,
docs/xen-facts.md section 4): it builds the same shell command line
(``TOOL -type CLASS -step N -host DST -domname NAME [-recover]``), runs it
with ``os.popen`` as xend does, and fails when the exit status is non-zero.
The final-delta function is the seam the tool calls (the failback's
``delta.final_delta_for``); in-process tests pass a recorder for it.
"""
from __future__ import absolute_import, division, print_function

import os
import sys

import pytest

from xen_remus_ext.errors import ResyncError, ValidationError
from xen_remus_ext.xend import hook as migrate
from xen_remus_ext.xend import hook_tool as tool

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def xend_device_migrate(tool_cmd, devclass, step, dst, domname, recover=False):
    """What xend's DevController does with the tool: returns (exit status, lines)."""
    line = "%s -type %s -step %d -host %s -domname %s" % (tool_cmd, devclass, step, dst, domname)
    if recover:
        line += " -recover"
    fd = os.popen(line)
    lines = [ln.rstrip() for ln in fd]
    rc = fd.close()
    return (rc >> 8) if rc else 0, lines


@pytest.fixture
def lean_tool(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", TOP)
    return "%s -m xen_remus_ext.xend.hook_tool" % sys.executable


class Delta(object):
    def __init__(self, fail=None):
        self.calls = []
        self.fail = fail

    def __call__(self, domname, host):
        self.calls.append((domname, host))
        if self.fail:
            raise self.fail
        return "2 disks, 1048576 bytes"


def call(devclass="tap2", step=2, host="10.0.0.1", domname="web1", recover=False):
    return migrate.HookCall(devclass, step, host, domname, recover)


def test_parse_args_as_xend_passes_them():
    got = migrate.parse_args(["-type", "tap2", "-step", "2", "-host", "h1", "-domname", "web1"])
    assert got == call(host="h1")
    got = migrate.parse_args(["-type", "vif", "-step", "3", "-host", "h1", "-domname", "d",
                              "-recover"])
    assert got.recover and got.step == 3


@pytest.mark.parametrize("argv", [
    [], ["-type", "tap2"], ["-type", "tap2", "-step", "x", "-host", "h", "-domname", "d"],
    ["-type", "tap2", "-step", "5", "-host", "h", "-domname", "d"],
    ["-type", "tap2", "-step", "2", "-host", "h", "-domname", "d", "-bogus", "1"],
    ["-type", "tap2", "-type", "tap", "-step", "2", "-host", "h", "-domname", "d"],
])
def test_parse_args_rejects(argv):
    with pytest.raises(ValidationError):
        migrate.parse_args(argv)


@pytest.mark.parametrize("c, action", [
    (call(devclass="vif"), migrate.NOTHING),
    (call(devclass="vbd"), migrate.NOTHING),
    (call(step=0), migrate.NOTHING),
    (call(step=1), migrate.CLEAR),
    (call(step=2), migrate.FINAL_DELTA),
    (call(devclass="tap", step=2), migrate.FINAL_DELTA),
    (call(step=3), migrate.NOTHING),
    (call(step=2, recover=True), migrate.RECOVER),
    (call(step=2, host="/var/lib/xen/save/web1.chk"), migrate.NOTHING),  # xm save
])
def test_plan_step(c, action):
    assert migrate.plan_step(c) == action


def test_step2_sends_delta_once_per_migration(tmp_path):
    delta = Delta()
    base = str(tmp_path)
    migrate.apply_step(call(step=1), delta_fn=delta, base=base)
    # xend calls step 2 for every device: two tap2 disks and a vif
    r1 = migrate.apply_step(call(step=2), delta_fn=delta, base=base)
    r2 = migrate.apply_step(call(step=2), delta_fn=delta, base=base)
    migrate.apply_step(call(devclass="vif", step=2), delta_fn=delta, base=base)
    assert delta.calls == [("web1", "10.0.0.1")]
    assert "acknowledged (2 disks" in r1 and "already acknowledged" in r2
    # a new migration (step 1) sends again
    migrate.apply_step(call(step=1), delta_fn=delta, base=base)
    migrate.apply_step(call(step=2), delta_fn=delta, base=base)
    assert len(delta.calls) == 2


def test_failed_delta_fails_the_step_and_leaves_no_mark(tmp_path):
    delta = Delta(fail=ResyncError("xvda: expected ack, got EOF"))
    with pytest.raises(ResyncError):
        migrate.apply_step(call(step=2), delta_fn=delta, base=str(tmp_path))
    assert not os.path.exists(migrate.mark_path("web1", "10.0.0.1", str(tmp_path)))
    out, err = [], []

    class W(object):
        def __init__(self, sink):
            self.sink = sink

        def write(self, s):
            self.sink.append(s)
    rc = tool.run(call(step=2), out=W(out), err=W(err), delta_fn=delta)
    assert rc == 1
    assert "xvda: expected ack, got EOF" in "".join(err)


def test_recover_clears_the_mark(tmp_path):
    delta = Delta()
    base = str(tmp_path)
    migrate.apply_step(call(step=2), delta_fn=delta, base=base)
    assert os.path.exists(migrate.mark_path("web1", "10.0.0.1", base))
    report = migrate.apply_step(call(step=2, recover=True), delta_fn=delta, base=base)
    assert "mark cleared" in report
    assert not os.path.exists(migrate.mark_path("web1", "10.0.0.1", base))
    migrate.apply_step(call(step=2), delta_fn=delta, base=base)
    assert len(delta.calls) == 2


def test_mark_path_is_confined(tmp_path):
    p = migrate.mark_path("../../etc/x", "h/../y", str(tmp_path))
    assert os.path.dirname(p) == os.path.join(str(tmp_path), "hook")


def test_tool_as_xend_runs_it_other_classes_and_steps(lean_tool, tmp_path):
    """Real processes through a shell, as DevController.migrate does."""
    for devclass in ("vif", "vbd", "console"):
        for step in (0, 1, 2, 3):
            rc, lines = xend_device_migrate(lean_tool, devclass, step, "10.0.0.1", "web1")
            assert rc == 0 and lines == ["xen-remus hook: %s step %d web1 -> 10.0.0.1: "
                                         "nothing to do" % (devclass, step)]
    rc, lines = xend_device_migrate(lean_tool, "tap2", 1, "10.0.0.1", "web1")
    assert rc == 0 and lines[-1].endswith("ready")
    rc, lines = xend_device_migrate(lean_tool, "tap2", 0, "10.0.0.1", "web1", recover=True)
    assert rc == 0 and "-recover" in lines[-1]


def test_tool_as_xend_runs_it_save_to_file(lean_tool, tmp_path):
    rc, lines = xend_device_migrate(lean_tool, "tap2", 2, str(tmp_path / "web1.chk"), "web1")
    assert rc == 0 and lines[-1].endswith("nothing to do")


def test_tool_bad_arguments_exit_2(lean_tool):
    fd = os.popen("%s -type tap2 -step 9 -host h -domname d 2>&1" % lean_tool)
    out = fd.read()
    rc = fd.close()
    assert rc >> 8 == 2
    assert "migrate step: expected one of 0-3, got 9" in out


def test_hooks_package_entry_still_runs_the_hook(monkeypatch):
    """``python -m xen_remus_ext.hooks``, written into xend-config.sxp files by
    hook-config on hosts without xen-remus on PATH, runs the same tool and
    counts as ours."""
    monkeypatch.setenv("PYTHONPATH", TOP)
    tool_cmd = "%s -m xen_remus_ext.hooks" % sys.executable
    rc, lines = xend_device_migrate(tool_cmd, "tap2", 1, "10.0.0.1", "web1")
    assert rc == 0 and lines[-1].endswith("ready")
    from xen_remus_ext.xend import xend_config
    assert xend_config.is_our_tool(tool_cmd)
    assert xend_config.is_our_tool("%s -m xen_remus_ext.xend.hook_tool" % sys.executable)


def test_xen_remus_hook_subcommand_runs_the_same_code(tmp_path, capsys):
    from xen_remus_ext.cli import main as cli
    rc = cli.main(["hook", "-type", "tap2", "-step", "1", "-host", "h1", "-domname", "web1"])
    assert rc == 0
    assert capsys.readouterr()[0] == "xen-remus hook: tap2 step 1 web1 -> h1: ready\n"


def test_plain_migration_without_failback_passes(tmp_path):
    """final_delta_for returns None when no failback of the domain migrates."""
    calls = []

    def none_delta(domname, host):
        calls.append(domname)
        return None
    report = migrate.apply_step(call(step=2), delta_fn=none_delta, base=str(tmp_path))
    assert "no failback in progress" in report
    assert not os.path.exists(migrate.mark_path("web1", "10.0.0.1", str(tmp_path)))


def test_real_final_delta_without_journal_is_a_no_op(lean_tool, tmp_path, monkeypatch):
    """The real failback.delta, in the tool process xend starts: no journal -> exit 0."""
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path))
    rc, lines = xend_device_migrate(lean_tool, "tap2", 2, "10.0.0.1", "web1")
    assert rc == 0, lines
    assert lines[-1].endswith("no failback in progress, nothing to send")


def test_journal_toward_another_host_fails_the_migration(lean_tool, tmp_path, monkeypatch):
    """A failback journal migrating to h1 while xend migrates to h9: the tool
    exits non-zero, so xend fails the migration rather than leave disks behind."""
    from xen_remus_ext.failback import journal, machine
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path))
    rec = journal.new_record("web1", "h1", machine.FAILBACK, now=1.0)
    rec["step"] = machine.MIGRATE
    journal.save(rec, str(tmp_path))
    assert journal.load("web1", str(tmp_path)) is not None
    line = "%s -type tap2 -step 2 -host h9 -domname web1 2>&1" % lean_tool
    fd = os.popen(line)
    out = fd.read()
    rc = fd.close()
    assert rc and rc >> 8 == 1, out
    assert "migrates to h1, but xend migrates it to h9" in out


def test_failback_migration_carries_the_final_delta(lean_tool, tmp_path, monkeypatch):
    """A failback journal in its migrate step, real disk copies: xend's four
    steps over every device; after step 2 the peer copy equals ours, and the
    journal records the delta as sent by the hook (once)."""
    from xen_remus_ext.failback import journal, machine
    from xen_remus_ext.resync import meta
    monkeypatch.setenv("XEN_REMUS_STATE_DIR", str(tmp_path / "state"))
    src, dst = str(tmp_path / "web1.img"), str(tmp_path / "peer-web1.img")
    data = os.urandom(1 << 20)
    for p in (src, dst):
        with open(p, "wb") as fh:
            fh.write(data)
    meta.mark_synced(dst, meta.ensure(src, 1 << 20, role="primary"))
    meta.rotate(src)  # failover: this copy takes writes the peer does not see
    with open(src, "r+b") as fh:
        fh.seek(196608)
        fh.write(b"w" * 12288)
    rec = journal.new_record("web1", "h1", machine.FAILBACK, now=1.0)
    rec["step"] = machine.MIGRATE
    rec["disks"] = [{"vdev": "xvda", "src": src, "dest": dst, "path": src}]
    journal.save(rec)
    for step in (0, 1, 2, 3):
        for devclass in ("vif", "tap2", "tap2"):
            rc, lines = xend_device_migrate(lean_tool, devclass, step, "h1", "web1")
            assert rc == 0, lines
            if step == 2 and devclass == "tap2":
                with open(src, "rb") as a, open(dst, "rb") as b:
                    assert a.read() == b.read()
    rec = journal.load("web1")
    assert rec["delta"]["sent"] and rec["delta"]["by"] == "xend-hook"
    assert [h[1] for h in rec["history"]].count("delta") == 1
