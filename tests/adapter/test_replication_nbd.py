"""The primary's NBD disk server through a real NBD client (libnbd's
nbdinfo and nbdcopy, Debian's libnbd-bin), and its capture of every write
into epochs on the control socket."""
from __future__ import absolute_import, division, print_function

import json
import os
import random
import socket
import subprocess

import pytest

from xen_remus_ext.replication import wire
from xen_remus_ext.replication.nbd import CaptureDisk, NbdServer
from xen_remus_ext.replication.replica import Replica

NBDCOPY = "/usr/bin/nbdcopy"
NBDINFO = "/usr/bin/nbdinfo"
pytestmark = pytest.mark.skipif(not (os.path.exists(NBDCOPY) and os.path.exists(NBDINFO)),
                                reason="needs nbdcopy/nbdinfo (Debian libnbd-bin; tools/host-deps.sh)")
SIZE = 4 << 20


def unix_listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s


def random_bytes(n, seed):
    rng = random.Random(seed)
    return bytes(bytearray(rng.getrandbits(8) for _ in range(n)))


@pytest.fixture
def served(tmp_path):
    img = str(tmp_path / "a.img")
    with open(img, "wb") as f:
        f.truncate(SIZE)
    sock, ctl = str(tmp_path / "nbd.sock"), str(tmp_path / "ctl.sock")
    disk = CaptureDisk(img)
    srv = NbdServer(disk, unix_listener(sock), unix_listener(ctl), name="xvda").start()
    yield img, "nbd+unix:///xvda?socket=%s" % sock, ctl
    srv.stop()
    disk.close()


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_nbdinfo_sees_the_export(served):
    _img, uri, _ctl = served
    out = json.loads(subprocess.check_output([NBDINFO, "--json", uri]).decode())
    exp = out["exports"][0]
    assert exp["export-size"] == SIZE
    assert exp["can_flush"] is True and exp["is_read_only"] is False


def test_nbdcopy_writes_land_in_the_image_and_read_back(served, tmp_path):
    img, uri, _ctl = served
    src = str(tmp_path / "src.img")
    data = random_bytes(SIZE, 1)
    with open(src, "wb") as f:
        f.write(data)
    subprocess.check_call([NBDCOPY, "--flush", src, uri])
    assert read(img) == data
    back = str(tmp_path / "back.img")
    subprocess.check_call([NBDCOPY, uri, back])
    assert read(back) == data


class Relay(object):
    """The relay's side of the control socket, for the test."""

    def __init__(self, path, baseline):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.dec = wire.Decoder("server")
        self.sock.sendall(wire.hello_frame({"baseline": baseline}))
        self.queue = []
        self.hello = wire.parse_hello(self.next(wire.HELLO)[1], "server")

    def next(self, want=None):
        while not self.queue:
            data = self.sock.recv(1 << 20)
            assert data, "server closed"
            self.queue += self.dec.feed(data)
        ftype, body = self.queue.pop(0)
        assert want is None or ftype == want, (wire.NAMES[ftype], wire.NAMES[want])
        return ftype, body

    def cut_into(self, replica):
        """CUT; feed the writes before it and the cut itself to ``replica``."""
        self.sock.sendall(wire.frame(wire.CUT))
        n = 0
        while True:
            ftype, body = self.next()
            if ftype == wire.CUT:
                epoch, writes, nbytes = wire.parse_cut(body)
                replica.cut(epoch, writes, nbytes)
                return epoch, writes, n
            replica.write(*wire.parse_write(body))
            n += 1


def test_every_write_of_an_epoch_reaches_the_relay_before_its_cut(served, tmp_path):
    img, uri, ctl = served
    backup = str(tmp_path / "b.img")
    with open(backup, "wb") as f:
        f.truncate(SIZE)
    relay = Relay(ctl, "none")
    assert relay.hello["size"] == SIZE
    replica = Replica(backup, str(tmp_path / "spool"))
    src = str(tmp_path / "src.img")
    first = random_bytes(SIZE, 2)
    with open(src, "wb") as f:
        f.write(first)
    subprocess.check_call([NBDCOPY, src, uri])
    epoch, writes, seen = relay.cut_into(replica)
    assert epoch == 0 and writes == seen and writes > 0
    assert read(backup) == b"\0" * SIZE          # held until the commit
    replica.commit(0)
    assert read(backup) == read(img) == first
    # epoch 1: a second copy, then failover before its commit: dropped
    second = random_bytes(SIZE, 3)
    with open(src, "wb") as f:
        f.write(second)
    subprocess.check_call([NBDCOPY, src, uri])
    epoch, writes, _ = relay.cut_into(replica)
    assert epoch == 1 and writes > 0
    assert replica.failover()[1] == writes
    assert read(backup) == first and read(img) == second
    replica.close()


def test_full_baseline_copies_the_disk_into_epoch_zero(served, tmp_path):
    img, uri, ctl = served
    data = random_bytes(SIZE, 4)
    src = str(tmp_path / "src.img")
    with open(src, "wb") as f:
        f.write(data)
    subprocess.check_call([NBDCOPY, src, uri])      # before any relay: not captured
    backup = str(tmp_path / "b.img")
    with open(backup, "wb") as f:
        f.truncate(SIZE)
    relay = Relay(ctl, "full")
    replica = Replica(backup, str(tmp_path / "spool"))
    assert relay.cut_into(replica)[0] == 0
    replica.commit(0)
    assert read(backup) == data
    replica.close()


def test_an_unknown_export_is_refused(served):
    _img, uri, _ctl = served
    proc = subprocess.Popen([NBDINFO, uri.replace("/xvda?", "/other?")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _out, err = proc.communicate()
    assert proc.returncode != 0
    assert b"other" in err or b"unknown" in err.lower(), err


NBD_CLIENT = "/usr/sbin/nbd-client"


@pytest.mark.skipif(not os.path.exists(NBD_CLIENT), reason="needs Debian's nbd-client")
@pytest.mark.skipif(os.path.exists("/sys/module/nbd"), reason="a kernel with NBD: the client would attach a device")
def test_debian_nbd_client_negotiates_with_the_server(served):
    # the kernel here has no NBD driver: the client does the whole userspace
    # handshake (what dom0 runs before handing the socket to the kernel) and
    # only then fails at the kernel step
    _img, uri, _ctl = served
    sock = uri.split("socket=", 1)[1]
    proc = subprocess.Popen([NBD_CLIENT, "-unix", sock, "/dev/nbd15", "-N", "xvda", "-b", "512", "-nofork"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate()
    text = (out + err).decode("utf-8", "replace")
    assert "size = %dMB" % (SIZE >> 20) in text, text
    assert proc.returncode != 0 and ("netlink" in text or "nbd15" in text), text


def test_a_second_relay_is_refused_by_name_and_leaves_no_thread_behind(served, tmp_path):
    """One relay at a time: another one's HELLO gets the reason (an ABORT
    frame the relay reports), not a silent close, and costs no thread
    that waits forever."""
    import threading
    import time
    from xen_remus_ext.errors import ReplicationError
    from xen_remus_ext.replication.relay import PrimaryRelay
    _img, _uri, ctl = served
    first = Relay(ctl, "none")
    assert first.hello["size"] == SIZE
    before = threading.active_count()
    for _ in range(3):
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.connect(ctl)
        relay = PrimaryRelay(0, 1, 0, 1, control)
        with pytest.raises(ReplicationError, match="disk server refused.*already attached"):
            relay._hello()
        control.close()
    end = time.time() + 10
    while threading.active_count() > before and time.time() < end:
        time.sleep(0.05)
    assert threading.active_count() == before
    first.sock.close()
