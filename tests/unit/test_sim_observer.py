"""The sim's ack observer (sim/cluster.py AckObserver) over a real Unix socket."""
from __future__ import absolute_import, division, print_function

import os
import socket
import time

import pytest

from xen_remus_ext.sim.cluster import AckObserver


def _send(path, line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(2.0)
    s.connect(path)
    s.sendall(line)
    return s


def test_acks_are_counted_per_domain(tmp_path):
    obs = AckObserver(str(tmp_path / "o.sock"))
    try:
        s = _send(obs.path, b"ack vm1 5\nack vm2 3\nack vm1 4\n")
        deadline = time.time() + 10
        while (obs.acked("vm1"), obs.acked("vm2")) != (5, 3):
            assert time.time() < deadline, (obs.acked("vm1"), obs.acked("vm2"))
            time.sleep(0.01)
        s.close()
        assert "the path: ours" in obs.describe()
    finally:
        obs.close()


def test_close_ends_the_accept_thread_and_the_listener(tmp_path):
    obs = AckObserver(str(tmp_path / "o.sock"))
    obs.close()
    assert not obs.thread.is_alive()
    with pytest.raises((socket.error, OSError)):
        _send(obs.path, b"ack vm1 1\n")        # nobody listens there any more
    assert obs.acked("vm1") == 0
    os.unlink(obs.path)
