"""The journal lock every Pacemaker action takes first."""
from __future__ import absolute_import, division, print_function

import os
import signal
import subprocess
import sys
import time

import pytest

from xen_remus_ext.errors import JournalError
from xen_remus_ext.failback.journal import JournalLock

HOLD = """
import sys, time
from xen_remus_ext.failback.journal import JournalLock
with JournalLock(sys.argv[1]):
    sys.stdout.write("held\\n"); sys.stdout.flush()
    time.sleep(60)
"""


def holder(domain):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, domain], stdout=subprocess.PIPE)
    assert proc.stdout.readline().strip() == b"held"
    return proc


def test_a_second_holder_times_out_naming_the_lock_file():
    proc = holder("vm1")
    try:
        t0 = time.time()
        with pytest.raises(JournalError) as e:
            JournalLock("vm1", timeout=0.5).acquire()
        assert time.time() - t0 >= 0.45
        assert "vm1.lock" in str(e.value) and "still held" in str(e.value)
        # another domain's lock is independent
        with JournalLock("vm2", timeout=0.5):
            pass
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_releases_the_lock():
    proc = holder("vm1")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with JournalLock("vm1", timeout=2.0) as lk:
        assert lk.fd is not None
        assert os.path.exists(lk.path)
    assert lk.fd is None


def test_waiting_without_timeout_gets_it_when_the_holder_ends():
    proc = holder("vm1")
    t0 = time.time()
    subprocess.Popen(["sh", "-c", "sleep 0.5; kill %d" % proc.pid])
    with JournalLock("vm1", timeout=None):
        assert time.time() - t0 >= 0.4
    proc.wait()


def test_a_bad_domain_name_is_refused():
    with pytest.raises(JournalError):
        JournalLock("../x")
