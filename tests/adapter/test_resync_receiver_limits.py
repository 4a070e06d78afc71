"""The TCP receiver's limits: strangers, floods, a full descriptor table, a stalled sender.

- the pre-authentication limit is a deadline, not a per-read timeout: a
  client trickling a byte now and then is still dropped on time;
- connections still authenticating are capped (in all and per address):
  the excess is closed at once, honest senders from elsewhere still get in;
- accept() failing (EMFILE) backs off instead of spinning the CPU;
- an authenticated session in which nothing moves is dropped: its target's
  lock is released and the target stays inconsistent.
"""
from __future__ import absolute_import, division, print_function

import os
import socket
import subprocess
import sys
import time

import pytest

from tests.adapter.resync_util import REPO, copy, make_image, same, write_key
from xen_remus_ext.resync import api, meta
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.blockio import BlockFile
from xen_remus_ext.resync.sender import SenderSession
from xen_remus_ext.resync.transport import ResyncServer, connect

MiB = 1 << 20


@pytest.fixture
def rig(tmp_path):
    src = make_image(str(tmp_path / "src.img"), 4 * MiB)
    dst = copy(src, str(tmp_path / "dst.img"))
    with open(dst, "r+b") as f:
        f.write(os.urandom(4096))
    key = write_key(str(tmp_path / "key"))
    return src, dst, key


def serve(dst, key, **kw):
    return ResyncServer(("127.0.0.1", 0), key, {"d": dst}, plaintext=True, **kw).start()


def closed_within(s, seconds):
    """:returns: seconds until the server closed ``s`` (None: still open after ``seconds``)."""
    t0 = time.time()
    s.settimeout(0.1)
    while time.time() - t0 < seconds:
        try:
            if s.recv(4096) == b"":
                return time.time() - t0
        except socket.timeout:
            continue
        except (IOError, OSError):
            return time.time() - t0
    return None


def test_a_trickling_stranger_is_dropped_at_the_deadline(rig):
    src, dst, key = rig
    srv = serve(dst, key, handshake_seconds=1.0)
    try:
        s = socket.create_connection(("127.0.0.1", srv.address[1]))
        s.send(P.HEADER.pack(P.HELLO, 0, 0, 60000))     # a HELLO announced, its payload trickled
        t0 = time.time()
        s.settimeout(0.1)
        gone = None
        while time.time() - t0 < 6:
            try:
                s.send(b" ")                      # a byte every 0.2 s: never idle for 1 s
            except (IOError, OSError):
                gone = time.time() - t0
                break
            if closed_within(s, 0.2) is not None:
                gone = time.time() - t0
                break
        s.close()
        assert gone is not None and gone < 2.5, gone
        assert srv.dropped == 1
    finally:
        srv.stop()


def test_pending_connections_are_capped_per_address(rig):
    src, dst, key = rig
    srv = serve(dst, key, handshake_seconds=10, max_preauth_per_address=3)
    try:
        hogs = [socket.create_connection(("127.0.0.1", srv.address[1])) for _ in range(3)]
        time.sleep(0.3)
        extra = socket.create_connection(("127.0.0.1", srv.address[1]))
        assert closed_within(extra, 3) is not None        # closed at once
        other = socket.create_connection(("127.0.0.1", srv.address[1]), source_address=("127.0.0.2", 0))
        assert closed_within(other, 1) is None            # another address still gets a slot
        assert srv.refused == 1
        for s in hogs + [extra, other]:
            s.close()
        time.sleep(0.3)
        api.resync(src, "tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key, mode="checksum", plaintext=True)
        assert same(src, dst)
    finally:
        srv.stop()


def test_a_silent_authenticated_session_is_dropped_and_the_lock_released(rig):
    src, dst, key = rig
    srv = serve(dst, key, idle_seconds=1.0)
    try:
        conn = connect("tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key)
        sess = SenderSession(conn)
        sess.handshake()
        m = meta.ensure(src, 4 * MiB)
        conn.chan.send_json(P.START, {"mode": "full", "block_size": 65536, "salt": "00" * 16, "rate": 0,
                                      "source": m.to_dict(), "discard_target": True, "resume": False})
        conn.chan.recv_json(P.START)
        conn.chan.send(P.DATA, P.U64.pack(0), b"x" * 4096)
        t0 = time.time()                              # ... and then nothing
        with pytest.raises(P.ProtocolError):
            conn.chan.recv()                          # the receiver hangs up
        took = time.time() - t0
        conn.close()
        assert 0.9 < took < 3.0, took
        deadline = time.time() + 5
        while True:
            try:
                with BlockFile(dst, write=True, exclusive=True):
                    break                             # the lock is free again
            except P.ResyncError:
                assert time.time() < deadline
                time.sleep(0.05)
        assert meta.load(dst).consistent is False    # never taken for a good copy
        assert srv.dropped == 1
        res = api.resync(src, "tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key, mode="checksum")
        assert same(src, dst) and res.mode == "checksum"
    finally:
        srv.stop()


def test_a_busy_session_is_not_silent(rig):
    """Digests flowing one way while nothing comes back is activity, not silence."""
    src, dst, key = rig
    srv = serve(dst, key, idle_seconds=2.5)
    try:
        res = api.resync(src, "tcp://127.0.0.1:%d/d" % srv.address[1], key_file=key, mode="checksum",
                         rate=MiB, verify=True)   # about 8 s: a digest record a second, little coming back
        assert res.verified and srv.dropped == 0
    finally:
        srv.stop()


SERVER = r'''
import logging, resource, sys, time
sys.path.insert(0, sys.argv[1])
logging.basicConfig(level=logging.WARNING)
resource.setrlimit(resource.RLIMIT_NOFILE, (48, 48))
from xen_remus_ext.resync.transport import ResyncServer
srv = ResyncServer(("127.0.0.1", 0), sys.argv[2], {"d": sys.argv[3]}, plaintext=True, handshake_seconds=4)
sys.stdout.write("%d\n" % srv.address[1])
sys.stdout.flush()
srv.serve_forever()
'''


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / float(os.sysconf("SC_CLK_TCK"))


def test_accept_errors_back_off_instead_of_spinning(rig, tmp_path):
    src, dst, key = rig
    script = str(tmp_path / "server.py")
    with open(script, "w") as f:
        f.write(SERVER)
    p = subprocess.Popen([sys.executable, script, REPO, key, dst], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        port = int(p.stdout.readline())
        hogs = []
        for i in range(80):                   # more than its descriptors allow, each from its own address
            s = socket.socket()
            s.setblocking(False)              # the kernel completes (or queues) each handshake: no wait
            s.bind(("127.0.0.%d" % (2 + i), 0))
            s.connect_ex(("127.0.0.1", port))
            hogs.append(s)
        time.sleep(0.5)
        c0, t0 = cpu_seconds(p.pid), time.time()
        time.sleep(2.0)
        share = (cpu_seconds(p.pid) - c0) / (time.time() - t0)
        assert share < 0.05, "receiver at %d%% CPU while out of descriptors" % (share * 100)
        for s in hogs:
            s.close()
        deadline = time.time() + 30           # it recovers: an honest sender gets through
        while True:
            try:
                api.resync(src, "tcp://127.0.0.1:%d/d" % port, key_file=key, mode="checksum", plaintext=True)
                break
            except P.ResyncError:
                assert time.time() < deadline
                time.sleep(0.5)
        assert same(src, dst)
    finally:
        p.kill()
        err = p.communicate()[1].decode("utf-8", "replace")
    assert "cannot accept a connection" in err and "backing off" in err      # it did run out
