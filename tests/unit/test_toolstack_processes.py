"""RemusProcesses: background senders found again by pid file, never a stranger."""
from __future__ import absolute_import, division, print_function

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.processes import RemusProcesses

LOOP = "import signal, sys, time\nsignal.signal(signal.SIGINT, lambda *a: sys.exit(0))\nwhile True: time.sleep(0.05)\n"
#: LOOP that says when its SIGINT handler is set
STRANGER = LOOP.replace("while", "print('ready'); sys.stdout.flush()\nwhile")


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


@pytest.fixture
def sigint_ignored():
    """This process as a shell without job control starts a background job
    (``pytest ... &`` in a script, nohup under sh): SIGINT ignored, and so
    in every child until it sets a handler."""
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, saved)


def _wait_for(pred, what, timeout=30.0):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.02)


def test_a_sender_started_with_sigint_ignored_still_stops_on_sigint(tmp_path, sigint_ignored):
    """Like xend's remus script, this sender stops on KeyboardInterrupt only:
    it must get SIGINT at its default, not the ignored one of its starter."""
    rp = RemusProcesses(str(tmp_path))
    script = ("import sys, time\nprint('ready'); sys.stdout.flush()\n"
              "try:\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    print('interrupted')\n")
    rp.start("guest", [sys.executable, "-u", "-c", script, "guest", "hostb"])
    _wait_for(lambda: "ready" in rp.tail("guest"), "the sender to start")
    assert rp.stop("guest", timeout=30.0) is True
    assert rp.tail("guest").split() == ["ready", "interrupted"]    # SIGINT, not the SIGKILL fallback


def test_a_recycled_pid_is_never_signalled(tmp_path):
    # the stranger says when its SIGINT handler is set (a SIGINT would end
    # it), and is cleaned up by SIGKILL: when this runs as a background job
    # it inherits SIGINT ignored until then, and a SIGINT sent earlier is lost
    stranger = subprocess.Popen([sys.executable, "-c", STRANGER, "someone-else"], stdout=subprocess.PIPE)
    try:
        assert stranger.stdout.readline().strip() == b"ready"
        rp = RemusProcesses(str(tmp_path))
        # a stale pid file naming a live process that is not our sender
        with open(str(tmp_path / "guest.pid"), "w") as f:
            json.dump({"pid": stranger.pid, "argv": ["xl", "remus", "guest", "hostb"],
                       "match": ["remus", "guest", "hostb"]}, f)
        assert not rp.running("guest")
        assert rp.stop("guest") is False
        time.sleep(0.2)
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()
        stranger.stdout.close()
