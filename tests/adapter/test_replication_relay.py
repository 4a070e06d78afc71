"""The primary and backup relays end to end, without Xen: a guest writing
numbered records through the NBD server, libxc's checkpoint loop writing a
PV stream into a real pipe, the relays over a socket pair, and a stand-in
`xl migrate-receive`.  Killing the primary at any moment must leave the
backup's disk exactly at the checkpoint the backup resumes from."""
from __future__ import absolute_import, division, print_function

import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.adapter import replication_util as U
from xen_remus_ext.errors import ReplicationError
from xen_remus_ext.replication.nbd import CaptureDisk, NbdServer
from xen_remus_ext.replication.relay import BackupRelay, PrimaryRelay, kill_process
from xen_remus_ext.replication.replica import Replica

SIZE = 8 << 20
HERE = os.path.dirname(os.path.abspath(__file__))
BANNER = b"xl migration receiver ready, send binary domain data.\n"


def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(4)
    return s


def blank(path):
    with open(path, "wb") as f:
        f.truncate(SIZE)


class Pair(object):
    """Host A (disk server, guest, libxc, primary relay) and host B (backup
    relay, replica, fake xl migrate-receive) joined by a socket pair."""

    def __init__(self, tmp, baseline="none", stream_is_pipe=True, pace=0.002):
        self.a_img, self.b_img = str(tmp / "a.img"), str(tmp / "b.img")
        blank(self.a_img)
        blank(self.b_img)
        self.disk = CaptureDisk(self.a_img)
        self.server = NbdServer(self.disk, listener(str(tmp / "nbd.sock")), listener(str(tmp / "ctl.sock")),
                                name="xvda").start()
        self.guest = U.Guest(U.NbdClient(str(tmp / "nbd.sock"), "xvda"), pace=pace)
        if stream_is_pipe:
            self.xl_r, self.xl_w = os.pipe()
        else:
            s1, s2 = socket.socketpair()
            self._keep = (s1, s2)
            self.xl_r, self.xl_w = s1.fileno(), s2.fileno()
        self.libxc = U.Libxc(self.xl_w, self.guest)
        self.back_r, back_w = os.pipe()           # what the relay sends back to xl
        self.sa, self.sb = socket.socketpair()
        self.child = subprocess.Popen([sys.executable, os.path.join(HERE, "fake_xl_receive.py"), self.b_img],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.replica = Replica(self.b_img, str(tmp / "spool"))
        child_in = os.dup(self.child.stdin.fileno())     # the relay owns (and closes) its copy
        self.child.stdin.close()
        self.backup = BackupRelay(self.sb.fileno(), self.sb.fileno(), child_in,
                                  self.child.stdout.fileno(), self.replica, timeout=5.0,
                                  kill_child=kill_process(self.child.pid))
        control = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        control.connect(str(tmp / "ctl.sock"))
        self.attached = threading.Event()
        self.primary = PrimaryRelay(self.xl_r, back_w, self.sa.fileno(), self.sa.fileno(), control,
                                    baseline=baseline, require_pipe=stream_is_pipe,
                                    on_attached=lambda info: self.attached.set())
        self.results = {}

    def _run(self, name, fn):
        try:
            self.results[name] = fn()
        except (ReplicationError, OSError) as exc:
            self.results[name] = exc

    def start(self):
        self.threads = [threading.Thread(target=self._run, args=(n, f))
                        for n, f in (("primary", self.primary.run), ("backup", self.backup.run))]
        for t in self.threads:
            t.daemon = True
            t.start()
        # the guest stays paused until every write of it is captured
        self.attached.wait(10)
        self.guest.thread.start()
        self.libxc.thread.start()

    def wait_checkpoints(self, n, extra_records=3, limit=60):
        end = time.time() + limit
        while time.time() < end:
            snaps = self.libxc.snapshots
            if (len(snaps) >= n and self.primary.stats["acks"] >= n
                    and self.guest.acked > snaps[-1][0] + extra_records):
                return
            if "primary" in self.results or "backup" in self.results:
                break
            time.sleep(0.005)
        raise AssertionError("no %d checkpoints: %r, relays %r" % (n, self.libxc.snapshots[-3:], self.results))

    def kill_a(self):
        """Host A dies: its link end goes silent and closed, its threads stop."""
        self.guest.stop = self.libxc.stop = True
        self.sa.shutdown(socket.SHUT_RDWR)
        self.threads[1].join(30)
        os.close(self.xl_r)
        out = self.child.stdout.read()
        self.child.wait()
        self.threads[0].join(30)
        return out

    def close(self):
        self.server.stop()
        self.replica.close()


@pytest.mark.parametrize("checkpoints", [1, 4, 9])
def test_failover_leaves_the_backup_disk_at_the_resumed_checkpoint(tmp_path, checkpoints):
    pair = Pair(tmp_path)
    pair.start()
    pair.wait_checkpoints(checkpoints)
    out = pair.kill_a()
    rep = U.parse_receiver_report(out.decode())
    back = pair.results["backup"]
    assert back["failover"] is True and back["aborted"] is None, back
    n = rep["checkpoint"]
    assert n >= checkpoints - 1 and back["committed"] == n    # n acknowledged before the kill
    assert rep["violations"] == []                  # each commit reached xl after its epoch was applied
    acked, inflight = rep["acked"], rep["inflight"]
    assert (acked, inflight) == pair.libxc.snapshots[n]
    lost, future = U.check_disk(pair.b_img, acked, inflight)
    assert lost == [] and future == [], (acked, inflight, lost, future[:5])
    a_max = max(U.records_on(pair.a_img))
    assert a_max > acked                             # A went on; B holds none of that
    assert back["dropped"][1] > 0 or a_max == acked + 1
    stats = pair.primary.stats
    assert len(stats["cuts"]) >= n + 1 and stats["pipe"] == 4096
    assert all(c["inpipe"] < 4096 for c in stats["cuts"])
    assert stats["acks"] >= checkpoints and len(stats["ack_latency"]) == stats["acks"]
    pair.close()


def test_full_baseline_brings_a_stale_backup_copy_along(tmp_path):
    pair = Pair(tmp_path, baseline="full")
    with open(pair.a_img, "r+b") as f:           # A's disk has data B's copy lacks
        f.seek(SIZE - 4096)
        f.write(b"\xAB" * 4096)
    pair.start()
    pair.wait_checkpoints(2)
    out = pair.kill_a()
    rep = U.parse_receiver_report(out.decode())
    assert pair.results["backup"]["committed"] == rep["checkpoint"] >= 1
    with open(pair.b_img, "rb") as f:
        f.seek(SIZE - 4096)
        assert f.read() == b"\xAB" * 4096
    lost, future = U.check_disk(pair.b_img, rep["acked"], rep["inflight"])
    assert lost == [] and future == []
    pair.close()


def test_banner_from_the_receiver_reaches_xl(tmp_path):
    pair = Pair(tmp_path)
    pair.start()
    got = b""
    while len(got) < len(BANNER):
        got += os.read(pair.back_r, 256)
    assert got == BANNER
    pair.wait_checkpoints(1)
    pair.kill_a()
    pair.close()


def test_a_cut_that_cannot_be_proven_aborts_without_failover(tmp_path):
    # a socket instead of a one-page pipe: libxc's whole checkpoint is already
    # buffered when the relay cuts, so the guest may have been resumed
    pair = Pair(tmp_path, stream_is_pipe=False)
    pair.start()
    for t in pair.threads:
        t.join(30)
    assert isinstance(pair.results["primary"], ReplicationError)
    assert "held" in str(pair.results["primary"])
    back = pair.results["backup"]
    assert back["aborted"] and back["failover"] is False
    pair.child.wait()
    assert pair.child.returncode == -9           # xl killed: no failover
    pair.guest.stop = pair.libxc.stop = True
    pair.close()


def test_relay_refuses_a_stream_that_is_not_a_pipe(tmp_path):
    s1, s2 = socket.socketpair()
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    relay = PrimaryRelay(s1.fileno(), s2.fileno(), s1.fileno(), s2.fileno(), ctl)
    with pytest.raises(ReplicationError, match="not a pipe.*cannot be proven"):
        relay.run()


def _drain(fd, into):
    def run():
        while True:
            data = os.read(fd, 65536)
            if not data:
                return
            into.append(data)
    t = threading.Thread(target=run)
    t.daemon = True
    t.start()
    return t


def test_a_commit_slower_than_the_timeout_is_not_silence_from_the_primary(tmp_path):
    """Applying a large epoch (a full baseline) can take longer than the
    timeout; frames that wait in the link meanwhile prove the primary alive:
    the backup must read them, not fail over on its own slowness."""
    from xen_remus_ext.replication import synth as X
    from xen_remus_ext.replication import wire
    img = str(tmp_path / "b.img")
    blank(img)
    now = [1000.0]
    replica = Replica(img, str(tmp_path / "spool"))
    real_commit = replica.commit

    def slow_commit(epoch):           # the clock moves on while epoch 0 is applied
        got = real_commit(epoch)
        if epoch == 0:
            now[0] += 10.0
        return got
    replica.commit = slow_commit
    data, marks = X.remus_stream(2, pages_per_checkpoint=24)
    sa, sb = socket.socketpair()
    child_r, child_w = os.pipe()
    out_r, out_w = os.pipe()
    fed = []
    drain = _drain(child_r, fed)
    relay = BackupRelay(sb.fileno(), sb.fileno(), child_w, out_r, replica, timeout=3.0,
                        clock=lambda: now[0])
    frames = []
    pos = 0
    for n, (tsc_end, _libxc_end, _end) in enumerate(marks):
        frames.append(wire.frame(wire.XEN, data[pos:tsc_end]))
        frames.append(wire.write_frame(n, 4096 * n, b"%d" % n * 4096))
        frames.append(wire.cut_frame(n, 1, 4096))
        pos = tsc_end
    frames.append(wire.frame(wire.XEN, data[pos:]))
    sender = threading.Thread(target=lambda: (sa.sendall(b"".join(frames)), sa.shutdown(socket.SHUT_WR)))
    sender.daemon = True
    sender.start()
    rep = relay.run()
    drain.join(10)
    sender.join(10)
    assert rep["committed"] == 1, rep
    assert rep["reason"] == "the primary relay closed the link", rep
    assert b"".join(fed) == data
    with open(img, "rb") as f:
        assert f.read(8192) == b"0" * 4096 + b"1" * 4096
    replica.close()
    for fd in (out_r, out_w, child_r):
        os.close(fd)
    sa.close()
    sb.close()


def _garbled_backup(tmp_path, garbage):
    """A backup relay fed ``garbage`` by a primary that stays connected."""
    img = str(tmp_path / "b.img")
    blank(img)
    replica = Replica(img, str(tmp_path / "spool"))
    sa, sb = socket.socketpair()
    child_r, child_w = os.pipe()
    out_r, out_w = os.pipe()
    killed = []
    relay = BackupRelay(sb.fileno(), sb.fileno(), child_w, out_r, replica, timeout=30.0,
                        kill_child=lambda: killed.append(True))
    sa.sendall(garbage)              # and the primary stays there: no end, no silence
    rep = relay.run()
    if not rep["failover"]:
        os.close(child_w)             # a failover closed it already
    replica.close()
    for fd in (out_r, out_w, child_r):
        os.close(fd)
    sa.close()
    sb.close()
    return rep, killed


@pytest.mark.parametrize("what", ["bad header", "epoch", "stream", "outside"])
def test_a_garbled_link_stops_the_receiver_without_a_failover(tmp_path, what):
    """Bytes that break the link's rules come from a primary that is still
    there (or from something in between): resuming the copy would run the
    guest twice.  The receiver is killed (no failover) before the backup
    relay lets go of its stdin, whatever rule was broken."""
    from xen_remus_ext.replication import wire
    garbage = {"bad header": b"\x09\0\0\0\0\0\0\0",
               "epoch": wire.write_frame(5, 0, b"x" * 512),
               "stream": wire.frame(wire.XEN, b"garbage" * 20),
               "outside": wire.write_frame(0, SIZE, b"x" * 512)}[what]
    rep, killed = _garbled_backup(tmp_path, garbage)
    assert rep["failover"] is False and killed == [True], rep
    assert rep["aborted"] and "primary relay" in rep["aborted"], rep


def _backup_on_pipes(tmp_path, clock, timeout):
    link_r, link_w = os.pipe()
    back_r, back_w = os.pipe()
    xl_r, xl_w = os.pipe()
    out_r, out_w = os.pipe()
    disk = str(tmp_path / "b.img")
    with open(disk, "wb") as f:
        f.truncate(1 << 20)
    replica = Replica(disk, str(tmp_path / "spool"))
    relay = BackupRelay(link_r, back_w, xl_w, out_r, replica, timeout=timeout, clock=clock)
    return relay, link_w, (link_r, back_r, back_w, xl_r, out_r, out_w), replica


def test_a_stall_of_the_backup_host_is_not_the_primarys_silence(tmp_path):
    """A wait that returns far later than asked (this host did not run the
    relay: a dom0 stall) is not counted as silence; real silence is."""
    calls = [0]

    def clock():                        # the host "stalls" for 30 s during the first wait
        calls[0] += 1
        return time.time() + (30.0 if calls[0] > 1 else 0.0)
    relay, link_w, fds, replica = _backup_on_pipes(tmp_path, clock, timeout=2.0)
    result = {}
    th = threading.Thread(target=lambda: result.update(rep=relay.run(), t=time.time()))
    t0 = time.time()
    th.start()
    th.join(20)
    try:
        assert not th.is_alive()
        rep = result["rep"]
        assert rep["failover"] and rep["reason"] == "no frame from the primary for 2.0 s"
        assert rep["stalls"] == 1 and rep["stall_max"] >= 28
        assert 1.8 <= result["t"] - t0 < 10       # then 2 s of real silence
    finally:
        replica.close()
        os.close(link_w)
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def test_a_backup_that_cannot_go_on_stops_the_receiver_and_reports_why(tmp_path):
    """An I/O error on the backup's side (here: xl's receiver gone, its
    stdin a broken pipe; a full spool or a failing disk alike) ends the
    backup relay with a report and the receiver killed, never with a
    traceback and xl's stdin let go at exit."""
    import signal as sig
    from xen_remus_ext.replication import synth as X
    from xen_remus_ext.replication import wire
    img = str(tmp_path / "b.img")
    blank(img)
    replica = Replica(img, str(tmp_path / "spool"))
    sa, sb = socket.socketpair()
    child_r, child_w = os.pipe()
    os.close(child_r)                # the receiver is gone
    out_r, out_w = os.pipe()
    killed = []
    old = sig.signal(sig.SIGPIPE, sig.SIG_IGN)
    try:
        relay = BackupRelay(sb.fileno(), sb.fileno(), child_w, out_r, replica, timeout=30.0,
                            kill_child=lambda: killed.append(True))
        sa.sendall(wire.frame(wire.XEN, X.xl_header()))
        rep = relay.run()
    finally:
        sig.signal(sig.SIGPIPE, old)
    assert rep["failover"] is False and killed == [True], rep
    assert "Broken pipe" in rep["aborted"], rep
    os.close(child_w)
    replica.close()
    for fd in (out_r, out_w):
        os.close(fd)
    sa.close()
    sb.close()
