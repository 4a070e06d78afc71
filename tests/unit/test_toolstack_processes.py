"""RemusProcesses: background senders found again by pid file, never a stranger."""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.processes import RemusProcesses

LOOP = "import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *a: sys.exit(0))\nwhile True: time.sleep(0.05)\n"


def test_start_stop_and_log(tmp_path):
    rp = RemusProcesses(str(tmp_path))
    argv = [sys.executable, "-c", "print('checkpointing'); import sys; sys.stdout.flush()\n" + LOOP, "guest"]
    pid = rp.start("guest", argv)
    assert rp.running("guest") and rp.pid("guest") == pid
    assert RemusProcesses(str(tmp_path)).running("guest")      # another process would find it
    assert rp.stop("guest") is True
    assert not rp.running("guest")
    assert "checkpointing" in rp.tail("guest")
    assert not os.path.exists(str(tmp_path / "guest.pid"))


def test_sender_that_dies_at_once_is_an_error(tmp_path):
    rp = RemusProcesses(str(tmp_path))
    with pytest.raises(ToolstackError) as err:
        rp.start("guest", [sys.executable, "-c", "import sys; sys.stderr.write('no such domain\\n'); sys.exit(3)"])
    assert "exited with 3" in str(err.value) and "no such domain" in str(err.value)
    assert not rp.running("guest")


def test_a_recycled_pid_is_never_signalled(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", LOOP, "someone-else"])
    try:
        rp = RemusProcesses(str(tmp_path))
        # a stale pid file naming a live process that is not our sender
        with open(str(tmp_path / "guest.pid"), "w") as f:
            json.dump({"pid": stranger.pid, "argv": ["xl", "remus", "guest", "hostb"],
                       "match": ["remus", "guest", "hostb"]}, f)
        assert not rp.running("guest")
        assert rp.stop("guest") is False
        assert stranger.poll() is None
    finally:
        stranger.send_signal(signal.SIGINT)
        stranger.wait()
