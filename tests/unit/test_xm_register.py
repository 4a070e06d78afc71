"""xm registration against a double of xen.xm.main's documented tables.

``tests/fakes/xm_main.py`` stands in for ``xen.xm.main`` (Xen 4.1/4.4), which
needs a Xen install to import; it follows docs/xen-facts.md section 1 (tables,
``all_commands`` built at import, prefix lookup, cmdHelp/longHelp layout).
The ``xen-remus`` side is a real argparse parser shaped like the failback
commands (options with and without values, ``--toolstack``) and a recording
``main_fn``: the seam the xm commands call.
"""
from __future__ import absolute_import, division, print_function

import argparse
import os
import subprocess
import sys

import pytest
import six

from tests.fakes import xm_main as fake_xm
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.xm import commands as xm_commands
from xen_remus_ext.xm import entry as xm_entry
from xen_remus_ext.xm import imported as xm_imported
from xen_remus_ext.xm import register as xm_register

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def cli_parser():
    """A xen-remus parser with the three target subcommands, as argparse builds it."""
    parser = argparse.ArgumentParser(prog="xen-remus")
    sub = parser.add_subparsers(dest="command")
    fb = sub.add_parser("failback")
    fb.add_argument("domain")
    fb.add_argument("host")
    fb.add_argument("-n", "--dry-run", action="store_true", help="print the plan, change nothing")
    fb.add_argument("--rate", metavar="MBPS", type=int, default=100,
                    help="limit the disk pre-copy to MBPS (default %(default)s)")
    fb.add_argument("--toolstack", choices=("xend", "xl", "sim"), help="toolstack to drive")
    fb.add_argument("--reverse-only", action="store_true",
                    help="resync the original primary's copy and protect toward it, "
                         "without migrating the domain back; a long description that xm "
                         "has to wrap over more than one line")
    rs = sub.add_parser("resync-domain")
    rs.add_argument("domain")
    rs.add_argument("host")
    rs.add_argument("--toolstack")
    st = sub.add_parser("status")
    st.add_argument("domain", nargs="?")
    st.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


class Recorder(object):
    def __init__(self, rc=0):
        self.rc = rc
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        return self.rc


@pytest.fixture
def xm():
    six.moves.reload_module(fake_xm)
    del fake_xm.CALLS[:]
    return fake_xm


def registered(xm, rc=0):
    rec = Recorder(rc)
    names = xm_register.register(xm, main_fn=rec, parser=cli_parser())
    return rec, names


def run_xm(xm, capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        xm.main(["xm"] + list(argv))
    out, errout = capsys.readouterr()
    return exc.value.code, out, errout


def test_register_fills_every_table(xm):
    before_all = list(xm.all_commands)
    _rec, names = registered(xm)
    assert names == ["remus-protect", "remus-failback", "remus-resync", "remus-status"]
    for name in names:
        assert name in xm.commands
        assert name in xm.SUBCOMMAND_HELP
        assert name in xm.SUBCOMMAND_OPTIONS
        assert name in xm.domain_commands
        assert name in xm.all_commands  # the separate list built at import
    assert xm.all_commands[:len(before_all)] == before_all
    assert xm.SUBCOMMAND_HELP["remus-failback"][0] == "<Domain> <Host> [options]"


def test_register_is_idempotent(xm):
    registered(xm)
    registered(xm)
    assert xm.all_commands.count("remus-failback") == 1
    assert xm.domain_commands.count("remus-status") == 1


def test_domain_commands_alone_would_not_reach_help(xm, capsys):
    """The fact the registration exists for: all_commands is a copy."""
    xm.domain_commands.append("remus-failback")
    xm.SUBCOMMAND_HELP["remus-failback"] = ("<Domain> <Host>", "x")
    rc, out, _ = run_xm(xm, capsys, "help")
    assert rc == 0 and "remus-failback" not in out


def test_xm_help_lists_the_commands(xm, capsys):
    registered(xm)
    rc, out, _ = run_xm(xm, capsys, "help")
    assert rc == 0
    for name in ("remus-failback", "remus-resync", "remus-status"):
        assert (" %-20s " % name) in out
    # the description wraps at 50 columns as for xm's own commands
    line = [ln for ln in out.splitlines() if ln.startswith(" remus-failback")][0]
    assert len(line.rstrip()) <= 1 + 20 + 1 + 50


def test_xm_command_help_prints_usage_and_options(xm, capsys):
    registered(xm)
    rc, out, _ = run_xm(xm, capsys, "remus-failback", "--help")
    assert rc == 1  # xm's usage() exits 1 for `xm <cmd> --help`
    lines = out.splitlines()
    assert lines[0] == "Usage: xm remus-failback <Domain> <Host> [options]"
    assert lines[1] == ""
    assert lines[2].startswith("Bring <Domain>")
    assert "  %-30s %s" % ("-n, --dry-run", "print the plan, change nothing") in out
    assert "  %-30s %s" % ("--rate=MBPS", "limit the disk pre-copy to MBPS (default") in out
    assert "\n" + " " * 33 + "100)\n" in out  # %(default)s expanded, wrapped at 43
    # a long description continues on lines indented by 33 columns
    idx = [i for i, ln in enumerate(lines) if ln.startswith("  --reverse-only")][0]
    assert lines[idx + 1].startswith(" " * 33) and lines[idx + 1].strip()


def test_xm_help_by_prefix_and_run_by_prefix(xm, capsys):
    rec, _ = registered(xm)
    rc, out, _ = run_xm(xm, capsys, "remus-st", "-h")
    assert out.startswith("Usage: xm remus-status [Domain] [options]")
    rc, out, _ = run_xm(xm, capsys, "remus-st", "dom1")
    assert rc == 0
    assert rec.calls == [["status", "dom1"]]


def test_ambiguous_prefix_is_not_found(xm, capsys):
    registered(xm)
    rc, _out, err = run_xm(xm, capsys, "remus", "dom1")
    assert rc == 1
    assert "Subcommand remus not found!" in err


def test_registration_keeps_every_unique_prefix(xm):
    """No xm prefix that resolved before resolves differently afterwards."""
    names = sorted(xm.commands)
    before = {}
    for name in names:
        for i in range(2, len(name) + 1):
            before[name[:i]] = xm.xm_lookup_cmd(name[:i])
    registered(xm)
    for prefix, target in before.items():
        if target is not None:
            assert xm.xm_lookup_cmd(prefix) is target, prefix


def test_failback_argv_adds_xend_toolstack(xm, capsys):
    rec, _ = registered(xm, rc=0)
    rc, _out, _err = run_xm(xm, capsys, "remus-failback", "web1", "10.0.0.1", "--dry-run")
    assert rc == 0
    assert rec.calls == [["failback", "--toolstack", "xend", "web1", "10.0.0.1", "--dry-run"]]


def test_explicit_toolstack_is_kept(xm, capsys):
    rec, _ = registered(xm)
    run_xm(xm, capsys, "remus-resync", "web1", "h2", "--toolstack=sim")
    assert rec.calls == [["resync-domain", "web1", "h2", "--toolstack=sim"]]


def test_failure_status_becomes_xm_exit_status(xm, capsys):
    registered(xm, rc=1)
    rc, _out, _err = run_xm(xm, capsys, "remus-failback", "web1", "h1")
    assert rc == 1


def test_usage_error_shows_xm_help(xm, capsys):
    def argparse_main(argv):
        parser = cli_parser()
        parser.parse_args(argv)  # exits 2: host missing
        return 0
    xm_register.register(xm, main_fn=argparse_main, parser=cli_parser())
    rc, out, err = run_xm(xm, capsys, "remus-failback", "web1")
    assert rc == 2
    assert "the following arguments are required" in err or "too few arguments" in err
    assert "Usage: xm remus-failback" in out


def test_missing_target_command_is_reported(capsys):
    parser = argparse.ArgumentParser(prog="xen-remus")
    parser.add_subparsers(dest="command").add_parser("config")
    rc = xm_commands.run("remus-status", [], main_fn=Recorder(), parser=parser)
    assert rc == 1
    assert "no 'xen-remus status' command" in capsys.readouterr()[1]


def test_register_refuses_a_module_without_xm_tables():
    import types
    mod = types.ModuleType("not_xm")
    mod.commands = {}
    with pytest.raises(ToolstackError) as exc:
        xm_register.register(mod, main_fn=Recorder(), parser=cli_parser())
    assert "SUBCOMMAND_HELP" in str(exc.value)


def test_entry_registers_then_runs_xm(xm, capsys, monkeypatch):
    rec = Recorder()
    monkeypatch.setattr(xm_commands, "build_cli_parser", cli_parser)
    monkeypatch.setattr("xen_remus_ext.cli.app.main", rec)
    with pytest.raises(SystemExit) as exc:
        xm_entry.main(["xm", "remus-status"], xm_main=xm)
    assert exc.value.code == 0
    assert rec.calls == [["status"]]


def test_entry_without_xend_says_so(capsys, monkeypatch):
    monkeypatch.setattr(xm_entry, "load_xm_main", lambda: None)
    assert xm_entry.main(["xm", "help"]) == 1
    err = capsys.readouterr()[1]
    assert "cannot import xen.xm.main" in err
    # the xen-remus command of every xm remus-* command is named for xl hosts
    named = err.split("'xen-remus ", 1)[1].split("'", 1)[0].split("|")
    assert sorted(named) == sorted(cmd.target for cmd in xm_commands.COMMANDS)


def test_xm_remus_script_runs_as_a_process(tmp_path):
    """`python -m xen_remus_ext.xm` imports xen.xm.main from sys.path: here the
    double, installed as a package `xen.xm.main` in a temp dir."""
    pkg = tmp_path / "xen" / "xm"
    pkg.mkdir(parents=True)
    (tmp_path / "xen" / "__init__.py").write_text(u"")
    (pkg / "__init__.py").write_text(u"")
    with open(os.path.join(TOP, "tests", "fakes", "xm_main.py")) as fh:
        (pkg / "main.py").write_text(six.text_type(fh.read()))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), TOP]))
    proc = subprocess.Popen([sys.executable, "-m", "xen_remus_ext.xm", "help"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=str(tmp_path))
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert b" remus-failback " in out and b" remus-status " in out
    assert b" migrate " in out  # xm's own commands are still listed


def test_imported_modules_run_through_xm_importcommand(xm, tmp_path, capsys, monkeypatch):
    """The IMPORTED_COMMANDS route: generated xen/xm/remus-*.py, one-line patch."""
    rec = Recorder(rc=3)
    monkeypatch.setattr(xm_commands, "build_cli_parser", cli_parser)
    monkeypatch.setattr("xen_remus_ext.cli.app.main", rec)
    paths = xm_imported.write_modules(str(tmp_path))
    assert sorted(os.path.basename(p) for p in paths) == [
        "remus-failback.py", "remus-protect.py", "remus-resync.py", "remus-status.py"]
    xm.IMPORTED_PATH = str(tmp_path)
    # the one-line patch: the names join IMPORTED_COMMANDS before the loop runs
    for name in ("remus-failback", "remus-resync", "remus-status"):
        xm.IMPORTED_COMMANDS.append(name)
        xm.commands[name] = xm._imported(name)
    rc, _out, _err = run_xm(xm, capsys, "remus-resync", "web1", "h2")
    assert rc == 3
    assert rec.calls == [["resync-domain", "--toolstack", "xend", "web1", "h2"]]
    # with the help entry present, xm prints the module's help() as the option rows
    xm.SUBCOMMAND_HELP["remus-status"] = ("[Domain]", "status")
    rc, out, _err = run_xm(xm, capsys, "remus-status", "--help")
    assert "  %-30s %s" % ("--json", "machine-readable output") in out


def test_imported_modules_do_not_overwrite_foreign_files(tmp_path):
    (tmp_path / "remus-status.py").write_text(u"print('someone else')\n")
    with pytest.raises(ToolstackError):
        xm_imported.write_modules(str(tmp_path))
    with pytest.raises(ToolstackError):
        xm_imported.remove_modules(str(tmp_path))
    assert (tmp_path / "remus-status.py").read_text() == u"print('someone else')\n"


def test_imported_modules_remove(tmp_path):
    xm_imported.write_modules(str(tmp_path))
    removed = xm_imported.remove_modules(str(tmp_path))
    assert len(removed) == 4
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("name", ["remus-failback", "remus-resync", "remus-status"])
def test_real_cli_options_reach_xm_help(xm, capsys, name):
    """With this tree's real xen-remus parser: every option of the target
    command appears in `xm <name> --help`."""
    cmd = xm_commands.BY_NAME[name]
    sub = xm_commands.subparser_for(xm_commands.build_cli_parser(), cmd.target)
    if sub is None:
        pytest.skip("this tree's xen-remus has no `%s` command yet" % cmd.target)
    xm_register.register(xm, main_fn=Recorder())
    rc, out, _ = run_xm(xm, capsys, name, "--help")
    assert out.startswith("Usage: xm %s " % name)
    for action in sub._actions:
        if action.option_strings and action.help != argparse.SUPPRESS \
                and not isinstance(action, argparse._HelpAction):
            assert max(action.option_strings, key=len) in out, action.option_strings


def test_registration_builds_no_parser_until_needed(xm, monkeypatch):
    """`xm list` must not pay for our parser: it is built on first use."""
    built = []

    def counting():
        built.append(1)
        return cli_parser()
    monkeypatch.setattr(xm_commands, "build_cli_parser", counting)
    rec = Recorder()
    xm_register.register(xm, main_fn=rec)
    xm.commands["list"]([])
    assert built == []
    rows = tuple(xm.SUBCOMMAND_OPTIONS["remus-failback"])
    assert ("-n", "--dry-run", "print the plan, change nothing") in rows
    xm.commands["remus-status"](["web1"])
    assert built == [1] and rec.calls == [["status", "web1"]]
