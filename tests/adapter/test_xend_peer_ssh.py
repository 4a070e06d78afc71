"""A peer's xend reached through ssh: XML-RPC carried by ``xen-remus
xend-relay`` to its Unix socket, and its Remus sender run on the peer.

``ssh`` here is a stand-in that runs the remote command locally in the
"peer's" environment (its own state directory, xend socket and ``remus``
on PATH) and logs the host it was asked for; everything after it (the
relay, the remus-sender command, the xend double's socket) is real.
"""
from __future__ import absolute_import, division, print_function

import json
import os
import shutil
import socket
import sys
import tempfile
import time

import pytest

from tests.fakes.xend_server import XendServer
from xen_remus_ext import wiring
from xen_remus_ext.errors import ToolstackError
from xen_remus_ext.toolstack.runner import SubprocessRunner
from xen_remus_ext.toolstack.xend import XendToolstack, ssh_uri

FAKES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "fakes")
REPO = os.path.dirname(os.path.dirname(FAKES))

FAKE_SSH = """#!%(py)s
import json, os, sys
args = sys.argv[1:]
if args[:1] == ["--"]:      # the end of ssh's options, as real ssh reads it
    args = args[1:]
with open(%(log)r, "a") as f:
    f.write(json.dumps(args) + "\\n")
if os.environ.get("FAKE_SSH_DOWN"):
    sys.stderr.write("ssh: connect to host %%s port 22: Connection refused\\n" %% args[0])
    sys.exit(255)
host, cmd = args[0], args[1:]
assert cmd[0] == "xen-remus", cmd
env = dict(os.environ, XEN_REMUS_STATE_DIR=%(state)r, PATH=%(bin)r + ":" + os.environ["PATH"],
           XM_SERVER=%(uri)r, PYTHONPATH=%(repo)r, XEN_REMUS_LOG="")
os.execve(%(py)r, [%(py)r, "-m", "xen_remus_ext"] + cmd[1:], env)
"""


@pytest.fixture
def peer():
    d = tempfile.mkdtemp(prefix="xre-xend-ssh-")
    sock = os.path.join(d, "xmlrpc.sock")
    srv = XendServer(sock).start()
    srv.double.add_domain("web1", disks=[("tap2", "tap:remus:hosta:9000|aio:/img", "xvda", "w")])
    bindir = os.path.join(d, "bin")
    os.mkdir(bindir)
    with open(os.path.join(bindir, "remus"), "w") as f:
        f.write("#!/bin/sh\nexec %s %s \"$@\"\n" % (sys.executable, os.path.join(FAKES, "fake_remus.py")))
    os.chmod(os.path.join(bindir, "remus"), 0o755)
    ssh = os.path.join(d, "ssh")
    with open(ssh, "w") as f:
        f.write(FAKE_SSH % {"py": sys.executable, "log": os.path.join(d, "ssh.log"), "state": os.path.join(d, "state"),
                            "bin": bindir, "uri": srv.uri, "repo": REPO})
    os.chmod(ssh, 0o755)
    srv.dir = d
    srv.ssh = ssh
    try:
        yield srv
    finally:
        for path in (os.path.join(d, "state", "remus", "web1.pid"),):
            if os.path.exists(path):
                pid = json.load(open(path))["pid"]
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
        srv.stop()
        shutil.rmtree(d, ignore_errors=True)


def ssh_log(srv):
    with open(os.path.join(srv.dir, "ssh.log")) as f:
        return [json.loads(line) for line in f]


def test_xml_rpc_through_the_relay(peer):
    ts = XendToolstack(uri=ssh_uri("hostb", peer.socket_path), ssh=[peer.ssh], host="hostb")
    names = sorted(d.name for d in ts.list_domains())
    assert names == ["Domain-0", "web1"]
    ts.pause("web1")
    assert peer.double.lookup("web1").paused
    assert ts.domain_info("web1").paused
    with pytest.raises(ToolstackError) as err:
        ts.pause("nosuch")
    assert "no such domain nosuch" in str(err.value)
    assert ts.host_info()["free_memory"] == peer.double.free_memory
    # every call went to hostb, through the relay to that socket
    calls = ssh_log(peer)
    assert calls and all(c == ["hostb", "xen-remus", "xend-relay", "--socket", peer.socket_path] for c in calls)


def test_unreachable_peer_says_what_ssh_said(peer):
    os.environ["FAKE_SSH_DOWN"] = "1"
    try:
        ts = XendToolstack(uri=ssh_uri("hostb"), ssh=[peer.ssh], host="hostb")
        with pytest.raises(ToolstackError) as err:
            ts.list_domains()
    finally:
        del os.environ["FAKE_SSH_DOWN"]
    assert "Connection refused" in str(err.value)


def test_relay_to_a_dead_socket_fails_cleanly(peer):
    ts = XendToolstack(uri=ssh_uri("hostb", os.path.join(peer.dir, "nothing.sock")), ssh=[peer.ssh], host="hostb")
    with pytest.raises(ToolstackError) as err:
        ts.list_domains()
    assert "nothing.sock" in str(err.value) and "is xend running" in str(err.value)


def test_peer_remus_runs_on_the_peer(peer):
    """wiring's peer xend toolstack starts, sees and stops the remus script ON the
    peer (its state directory, its PATH), never locally."""
    local_state = tempfile.mkdtemp(prefix="xre-local-")
    old = os.environ.get("XEN_REMUS_STATE_DIR")
    os.environ["XEN_REMUS_STATE_DIR"] = local_state
    try:
        ts = wiring.peer_toolstack("xend", "hostb", ssh=peer.ssh, peer_uri=ssh_uri("hostb", peer.socket_path))
        assert ts.ssh == [peer.ssh, "--"] and ts.host == "hostb"     # "--": the host is never an option
        assert not ts.remus_running("web1")
        pid = ts.remus_start("web1", "hosta", interval_ms=100, net=False)
        assert isinstance(pid, int)
        assert ts.remus_running("web1")
        rec = json.load(open(os.path.join(peer.dir, "state", "remus", "web1.pid")))
        assert rec["pid"] == pid and rec["match"] == ["-i", "100", "--no-net", "web1", "hosta"]
        assert not os.path.exists(os.path.join(local_state, "remus"))    # nothing of it here
        assert ts.remus_stop("web1") is True
        deadline = time.time() + 10
        while ts.remus_running("web1") and time.time() < deadline:
            time.sleep(0.1)
        assert not ts.remus_running("web1")
        assert ts.remus_stop("web1") is False
        verbs = [c[3] for c in ssh_log(peer) if c[1:3] == ["xen-remus", "remus-sender"]]
        assert verbs[:3] == ["status", "start", "status"] and "stop" in verbs
    finally:
        if old is None:
            del os.environ["XEN_REMUS_STATE_DIR"]
        else:
            os.environ["XEN_REMUS_STATE_DIR"] = old
        shutil.rmtree(local_state, ignore_errors=True)


def test_remote_remus_start_failure_reports_the_peers_message(peer):
    ts = wiring.peer_toolstack("xend", "hostb", ssh=peer.ssh, peer_uri=ssh_uri("hostb", peer.socket_path))
    with pytest.raises(ToolstackError) as err:
        ts.remus_start("nosuch", "hosta", interval_ms=100, net=False)
    assert "on hostb" in str(err.value) and "remus-sender start" in str(err.value)


def test_runner_closes_fds_and_honours_timeout():
    r = SubprocessRunner()
    s = socket.socket()
    try:
        fd = s.fileno()
        if hasattr(os, "set_inheritable"):
            os.set_inheritable(fd, True)
        rc, out, err = r.run([sys.executable, "-c", "import os, sys; os.fstat(%d)" % fd])
        assert rc != 0 and b"Bad file descriptor" in err
    finally:
        s.close()
    t0 = time.time()
    with pytest.raises(ToolstackError) as exc:
        r.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert time.time() - t0 < 10 and "killed" in str(exc.value)
    rc, out, _ = r.run([sys.executable, "-c", "import sys; sys.stdout.write(repr(sys.stdin.read()))"])
    assert rc == 0 and out.strip() in (b"''", b"u''")     # /dev/null, not our stdin
