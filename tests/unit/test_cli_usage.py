"""Option values a command cannot use are usage errors (exit 2, a message
naming the option, nothing started), the same for every command that takes
the option, as xen-remus(1) says under EXIT STATUS."""
from __future__ import absolute_import, division, print_function

import pytest

from tests.cli_util import usage
from xen_remus_ext.cli import main as cli


@pytest.mark.parametrize("command", ["protect", "failback", "resync-domain"])
@pytest.mark.parametrize("rate", ["1", "100K", "-5"])
def test_a_rate_under_256k_is_a_usage_error_as_for_resync(command, rate, capsys):
    for argv in (["resync", "--rate", rate, "a", "b"], [command, "--rate", rate, "dom", "192.0.2.1"]):
        err = usage(argv, capsys)
        assert "argument --rate" in err and rate in err


@pytest.mark.parametrize("argv, needle", [
    (["protect", "-i", "0", "dom", "h"], "argument -i/--interval"),
    (["failback", "--interval", "-5", "dom", "h"], "argument -i/--interval"),
    (["failback", "-p", "70000", "dom", "h"], "argument -p/--port"),
    (["failback", "-p", "0", "dom", "h"], "argument -p/--port"),
])
def test_interval_and_port_out_of_range_are_usage_errors(argv, needle, capsys):
    assert needle in usage(argv, capsys)


@pytest.mark.parametrize("argv, needle", [
    (["demo", "--seconds", "-1"], "argument --seconds"),
    (["demo", "--seconds", "nan"], "argument --seconds"),
    (["demo", "--rate", "0"], "argument --rate"),
    (["demo", "--interval", "0"], "argument --interval"),
])
def test_demo_refuses_values_it_cannot_run_before_starting_hosts(argv, needle, capsys):
    err = usage(argv, capsys)
    assert needle in err and "hosts up" not in err


def test_ocf_without_an_action_names_only_the_action(capsys):
    err = usage(["ocf"], capsys)
    assert "ACTION" in err and "extra" not in err


@pytest.mark.parametrize("command,needle", [
    ("protect", "where HOST's disk copies are, as %(host)s"),
    ("failback", "continue the journaled failback"),
    ("resync-domain", "--discard-target"),
])
def test_help_of_the_journaled_commands_renders(command, needle, capsys):
    with pytest.raises(SystemExit) as ei:
        cli.main([command, "--help"])
    assert ei.value.code == 0
    assert needle in " ".join(capsys.readouterr().out.split())
