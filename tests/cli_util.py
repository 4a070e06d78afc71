"""Helpers for tests that drive the ``xen-remus`` command line in-process."""
from __future__ import absolute_import, division, print_function

import pytest

from xen_remus_ext.cli import main as cli


def usage(argv, capsys):
    """Run the CLI expecting a usage error (exit 2, no traceback): :returns: its stderr."""
    with pytest.raises(SystemExit) as ei:
        cli.main(argv)
    err = capsys.readouterr().err
    assert ei.value.code == 2, err
    assert "Traceback" not in err
    return err
