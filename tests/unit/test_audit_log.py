"""The audit trail: one INFO line at the start and the end of every resync
and verify in the log file, written through a handler that follows
logrotate's rename, and -q silencing the summaries."""
from __future__ import absolute_import, division, print_function

import logging
import os
import re

import pytest

from tests.adapter.resync_util import copy, make_image, mutate
from xen_remus_ext import log as xlog
from xen_remus_ext.cli import main as cli

MiB = 1 << 20


@pytest.fixture
def logfile(tmp_path, monkeypatch):
    path = str(tmp_path / "remus-ext.log")
    monkeypatch.setenv("XEN_REMUS_LOG", path)
    root = logging.getLogger("xen_remus_ext")
    saved = (list(root.handlers), getattr(root, "_xre_setup", False), root.level)
    root.handlers = []
    root._xre_setup = False
    yield path
    for h in root.handlers:
        h.close()
    root.handlers, root._xre_setup, level = saved[0], saved[1], saved[2]
    root.setLevel(level)


def lines(path, word):
    with open(path) as f:
        return [ln for ln in f.read().splitlines() if word in ln]


def test_resync_and_verify_leave_start_and_end_lines(tmp_path, logfile, capsys):
    src = make_image(str(tmp_path / "src.img"), MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    mutate(dst, 3, seed=1)
    assert cli.main(["-q", "resync", "--no-progress", src, dst]) == 0
    assert cli.main(["-q", "verify", "--no-progress", src, dst]) == 0
    assert capsys.readouterr().err == ""          # -q: no summary
    start, end = lines(logfile, "resync start:"), lines(logfile, "resync end:")
    assert len(start) == 1 and len(end) == 1
    assert " INFO " in start[0] and src in start[0] and dst in start[0]
    assert "ok, checksum mode, generation" in end[0] and "bytes sent" in end[0]
    assert len(lines(logfile, "verify start:")) == 1
    assert "identical" in lines(logfile, "verify end:")[0]
    # a refused resync or verify still ends with a line saying so, naming both ends
    assert cli.main(["-q", "resync", src, src]) == 1
    assert "failed" in lines(logfile, "resync end:")[-1]
    missing = str(tmp_path / "missing.img")
    assert cli.main(["-q", "verify", "--no-progress", src, missing]) == 2
    end = lines(logfile, "verify end:")[-1]
    assert "%s against %s: failed: " % (src, missing) in end and "does not exist" in end


def test_log_handler_survives_logrotate(tmp_path, logfile):
    src = make_image(str(tmp_path / "src.img"), MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    xlog.setup(quiet=True)
    os.rename(logfile, logfile + ".1")     # what logrotate does (no copytruncate)
    assert cli.main(["-q", "resync", "--no-progress", src, dst]) == 0
    assert os.path.exists(logfile)
    assert len(lines(logfile, "resync end:")) == 1
    assert not lines(logfile + ".1", "resync end:")


def test_debian_package_rotates_the_log():
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(top, "debian", "xen-remus-ext.logrotate")) as f:
        text = f.read()
    assert xlog.DEFAULT_LOG in text and "copytruncate" not in text


def test_receive_listen_refuses_a_missing_export(tmp_path, capsys):
    key = tmp_path / "key"
    key.write_bytes(b"k" * 32)
    os.chmod(str(key), 0o600)
    rc = cli_main_quiet(["receive", "--listen", "127.0.0.1:0", "--key", str(key),
                         "--export", "d=%s" % (tmp_path / "absent.img")])
    err = capsys.readouterr().err
    assert rc == 1 and "--export d=" in err and "absent.img" in err


def cli_main_quiet(argv):
    return cli.main(["-q"] + list(argv))


def test_debian_services_are_disabled_by_default():
    top = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with open(os.path.join(top, "debian", "rules")) as f:
        rules = f.read()
    for name in ("xen-remus-receive", "xen-remus-supervise"):
        assert "dh_installsystemd --name=%s --no-enable --no-start" % name in rules
        with open(os.path.join(top, "debian", "xen-remus-ext.%s.default" % name)) as f:
            assert re.search(r"^[A-Z]+_OPTS=\"\"$", f.read(), re.M)
        for ext in ("service", "init"):
            assert os.path.exists(os.path.join(top, "debian", "xen-remus-ext.%s.%s" % (name, ext)))
