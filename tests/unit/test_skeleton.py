"""The package skeleton: model invariants and the CLI's exit codes."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext import model
from xen_remus_ext.cli import main as cli
from xen_remus_ext.errors import ConfigError, ValidationError


def test_config_error_format_names_file_line_column():
    err = ConfigError("/etc/xen/x.cfg", 3, "bad quote", column=7)
    assert str(err) == "/etc/xen/x.cfg:3:7: error: bad quote"


def test_domain_config_rejects_unknown_builder():
    with pytest.raises(ValidationError):
        model.DomainConfig(name="x", builder="pv")


def test_extent_rejects_negative():
    with pytest.raises(ValidationError):
        model.Extent(-1, 10)


def test_cli_usage_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--no-such-option"])
    assert exc.value.code == 2


def test_cli_no_command_exit_2():
    assert cli.main([]) == 2
