"""``xen-remus --version``: on stdout, exit 0, on every Python (2.7's argparse
prints its version action to stderr)."""
from __future__ import absolute_import, division, print_function

import os
import subprocess
import sys

from xen_remus_ext import __version__

TOP = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_version_goes_to_stdout():
    env = dict(os.environ, PYTHONPATH=TOP, XEN_REMUS_LOG="")
    proc = subprocess.Popen([sys.executable, "-m", "xen_remus_ext", "--version"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)
    out, err = proc.communicate()
    assert proc.returncode == 0
    assert out.decode() == "xen-remus %s\n" % __version__ and err == b""


def test_version_in_process(capsys):
    from xen_remus_ext.cli import main as cli
    try:
        cli.main(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    else:
        raise AssertionError("--version did not exit")
    out, err = capsys.readouterr()
    assert out == "xen-remus %s\n" % __version__ and err == ""
