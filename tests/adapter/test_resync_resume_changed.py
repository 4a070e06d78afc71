"""A resumed resync never trusts the ranges the interrupted run finished.

Bare image files keep their generation when written, so the receiver's
journal key (source generation, size, mode, block size) cannot tell that
the source changed between the interrupted run and the rerun.  The rerun
compares the finished ranges by digests (no data crosses where they match)
and sends what differs: the target ends byte-identical whatever was written
to the source in between, for every mode and transport.

The interruption is deterministic: the sender stops after its third MARK
(each MARK names a finished MiB), once the receiver has journaled 2 MiB.
"""
from __future__ import absolute_import, division, print_function

import os
import sys
import time

import pytest

from tests.adapter.resync_util import copy, make_image, same, write_key
from tests.adapter.sshd_util import Sshd, remote_cmd
from xen_remus_ext.errors import TargetBusyError
from xen_remus_ext.resync import api, journal, meta, sender
from xen_remus_ext.resync import protocol as P
from xen_remus_ext.resync.blockio import BlockFile

MiB = 1 << 20
SIZE = 8 * MiB
#: the interrupted run stops after this many MARKs (one MiB each on an 8 MiB disk)
MARKS = 3


class Interrupted(Exception):
    pass


def journal_done(path, state_dir=None):
    """The finished ranges in ``path``'s resume journal (on the host whose state dir is ``state_dir``)."""
    old = os.environ["XEN_REMUS_STATE_DIR"]
    if state_dir:
        os.environ["XEN_REMUS_STATE_DIR"] = state_dir
    try:
        j = journal.Journal.load(path)
    finally:
        os.environ["XEN_REMUS_STATE_DIR"] = old
    return j.done if j is not None else []


def interrupted_run(monkeypatch, src, dest, dst, state_dir=None, **kw):
    """Run a resync into ``dest`` (the path ``dst``) that stops after
    :data:`MARKS` MARK records, once the receiver has journaled 2 MiB.

    :returns: the finished ranges its journal names, once the receiver let go.
    """
    real = sender.SenderSession._mark
    count = [0]

    def mark(self, pending):
        rest = real(self, pending)
        count[0] += 1
        if count[0] >= MARKS:
            t0 = time.time()
            while sum(e - s for s, e in journal_done(dst, state_dir)) < 2 * MiB and time.time() - t0 < 20:
                time.sleep(0.02)
            raise Interrupted("stopped after %d marks" % count[0])
        return rest
    monkeypatch.setattr(sender.SenderSession, "_mark", mark)
    try:
        with pytest.raises(Interrupted):
            api.resync(src, dest, **kw)
    finally:
        monkeypatch.setattr(sender.SenderSession, "_mark", real)
    released(dst)
    return journal_done(dst, state_dir)


def write_at(path, off, data):
    with open(path, "r+b") as f:
        f.seek(off)
        f.write(data)


def flip(path, off):
    """Invert the byte at ``off``."""
    with open(path, "r+b") as f:
        f.seek(off)
        b = bytearray(f.read(1))
        b[0] ^= 0xFF
        f.seek(off)
        f.write(bytes(b))


def prepare(tmp_path, mode):
    src = make_image(str(tmp_path / "r1.img"), SIZE)
    dst = str(tmp_path / "r2.img")
    if mode == "checksum":
        copy(src, dst)
        # differences past the part the interrupted run finishes, so that no
        # refinement in flight holds its MARKs back
        for k in range(20):
            write_at(dst, 4 * MiB + k * 200000, os.urandom(3000))
    else:
        make_image(dst, SIZE)
    return src, dst


def released(path, deadline=20.0):
    """Wait until no receiver holds ``path`` any more (a server's session
    ends a moment after its sender went away).  :returns: ``path``."""
    t0 = time.time()
    while True:
        try:
            with BlockFile(path, write=True, exclusive=True):
                return path
        except TargetBusyError:
            if time.time() - t0 > deadline:
                raise
            time.sleep(0.05)


def rerun_after_source_write(monkeypatch, src, dest, dst, mode, state_dir=None, **kw):
    """Interrupt, write the source inside a finished range, rerun: :returns: (result, events, done)."""
    done = interrupted_run(monkeypatch, src, dest, dst, state_dir, mode=mode, **kw)
    assert done and done[0][0] == 0 and done[0][1] >= 2 * MiB, done
    # inside the first finished range, and its very last byte
    write_at(src, done[0][1] // 2 - 2500, os.urandom(5000))
    flip(src, done[0][1] - 1)
    events = []
    res = api.resync(src, dest, mode=mode, events=events.append, **kw)
    return res, events, done


def check_outcome(res, events, done, src, dst, mode):
    assert same(src, dst), "the resumed run left the target different from its source"
    finished = sum(e - s for s, e in done)
    resume = [e for e in events if e.get("event") == "resume"]
    assert resume and resume[0]["reverify"] == finished, resume
    assert res.resumed == finished
    assert 5001 <= res.resent <= 3 * api.ResyncOptions().block_size, res
    if mode == "full":
        # only the rest and what changed crossed, not the finished ranges again
        assert res.bytes_sent < SIZE - finished + MiB, res


@pytest.mark.parametrize("mode", ["full", "checksum"])
def test_local_resume_after_source_write(tmp_path, monkeypatch, mode):
    src, dst = prepare(tmp_path, mode)
    res, events, done = rerun_after_source_write(monkeypatch, src, dst, dst, mode)
    check_outcome(res, events, done, src, dst, mode)
    assert meta.load(dst).consistent and journal.Journal.load(dst) is None


def test_tcp_resume_after_source_write(tmp_path, monkeypatch):
    src, dst = prepare(tmp_path, "full")
    key = write_key(str(tmp_path / "key"))
    server = api.ResyncServer("127.0.0.1:0", key, {"d": dst}, cert=str(tmp_path / "cert.pem")).start()
    try:
        res, events, done = rerun_after_source_write(monkeypatch, src, "tcp://127.0.0.1:%d/d" % server.address[1],
                                                     dst, "full", key_file=key)
    finally:
        server.stop()
    check_outcome(res, events, done, src, dst, "full")


@pytest.mark.skipif(not Sshd.usable(), reason="needs root and /usr/sbin/sshd")
def test_ssh_resume_after_source_write(tmp_path, monkeypatch):
    src, dst = prepare(tmp_path, "full")
    rstate = str(tmp_path / "remote-state")
    monkeypatch.setenv("XEN_REMUS_REMOTE_CMD", remote_cmd(sys.executable, rstate))

    sshd = Sshd().start()
    try:
        res, events, done = rerun_after_source_write(monkeypatch, src, "127.0.0.1:" + dst, dst, "full",
                                                     state_dir=rstate, ssh=sshd.ssh)
    finally:
        sshd.stop()
    check_outcome(res, events, done, src, dst, "full")


def test_resume_with_a_quiet_source_sends_no_finished_data(tmp_path, monkeypatch):
    """Nothing changed: the finished ranges cost digests only."""
    src, dst = prepare(tmp_path, "full")
    done = interrupted_run(monkeypatch, src, dst, dst, mode="full")
    finished = sum(e - s for s, e in done)
    res = api.resync(src, dst, mode="full")
    assert same(src, dst) and res.resumed == finished and res.resent == 0
    assert res.bytes_sent < SIZE - finished + 64 * 1024, res


class _V2(object):
    """The protocol module as a version-2 peer sees it (it would skip finished ranges unseen)."""
    VERSIONS = (1, 2)

    def __getattr__(self, name):
        return getattr(P, name)


def test_a_version_2_sender_is_offered_no_finished_ranges(tmp_path, monkeypatch):
    """An older sender would skip whatever START's answer names: it gets nothing to skip."""
    src, dst = prepare(tmp_path, "full")
    assert interrupted_run(monkeypatch, src, dst, dst, mode="full")
    write_at(src, 1000, os.urandom(3000))
    monkeypatch.setattr(sender, "P", _V2())
    offered = []
    real = sender._done_ranges
    monkeypatch.setattr(sender, "_done_ranges", lambda pairs, size: (offered.append(pairs), real(pairs, size))[1])
    res = api.resync(src, dst, mode="full")
    assert offered == [[]] and res.resumed == 0
    assert same(src, dst) and meta.load(dst).consistent
